"""Moving records in and out of splitdask as other formats: the ``import`` and
``export`` commands' engines.

* ``_sources``: what a folder, a file or an archive holds, as record sources.
* ``_export``: records out as files, lines or a tar archive.
"""
