"""``python -m splitdask``: the ``splitdask`` command."""

from splitdask.cli import main

if __name__ == "__main__":
    main()
