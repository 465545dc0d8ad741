#!/usr/bin/env python3
"""Size and import-structure check for the splitdask package (standard library only).

    python ci/structure.py [PACKAGE_DIR] [--max-module-lines N] [--max-class-lines N]

Parses every ``*.py`` file under the package (default: ``splitdask/`` next to ``ci/``)
with ``ast`` and prints

* every module longer than ``--max-module-lines`` (default 450) lines,
* every class (nested ones too) longer than ``--max-class-lines`` (default 300) lines,
  counted from its first decorator to its last line,
* every import circle between the package's own modules,
* every import that runs against the layers (:data:`LAYERS`): a module may import
  modules of its own layer (units: top-level subpackages or modules) and lower ones,

then the layers and one summary line, ``N modules, X over 450 lines, Y classes over
300, Z import circles, W imports against the layers``. Exits 1 if any limit is broken,
2 if a file does not parse.

Import edges: ``import splitdask.x``, ``from splitdask.x import y``, ``from splitdask
import x`` and relative imports (``from . import x``, ``from ..x import y``), wherever
they stand: at module level, inside functions or methods (marked "deferred" in the
output; they still count, a deferred import only hides a circle), under ``try:`` etc.
``from P import name`` points at module ``P.name`` when that module exists, else at ``P``.
Not counted as edges:

* imports under ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``): they never run, so
  they are listed separately as "type-only" and ignored for circles;
* a package ``__init__`` importing a module inside its own package (re-exports), and the
  implicit import of a module's parent packages (``import splitdask.a.b`` runs
  ``splitdask/a/__init__.py``), which would otherwise put every ``__init__`` in a circle.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

MAX_CIRCLES_PER_GROUP = 50  # elementary circles listed per strongly connected group

# The package's layers, lowest first, as units: a top-level subpackage or module of the
# package (its __init__ is above them all). Data flows one way, from the format up to the
# engines; `docs/decisions.md` ("The package's shape") draws the same picture.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "_util"),  # exceptions and argument checks every layer may use
    ("_format",),  # bytes: manifest, footers, names, compression; no I/O
    ("_store",),  # files and byte ranges on local disk or fsspec; no format knowledge
    ("_dataset", "plan"),  # what a commit left: parts, snapshots, index and order arithmetic
    ("_read",),  # records, batches and bins out of a snapshot; the read layer's Loader
    ("_write",),  # parts in, commits, compaction, gc (compaction reads bins)
    ("_transfer", "_front", "bag", "ray", "_raysink", "torch", "_torchmap", "_torchmix", "mpq"),
    ("cli", "__main__"),  # the command line
)


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    path: str
    line: int
    deferred: bool  # inside a function body
    type_only: bool  # under `if TYPE_CHECKING:`


@dataclass
class Module:
    name: str
    path: Path
    rel: str
    is_package: bool
    tree: ast.Module
    lines: int


def module_name(pkg_dir: Path, path: Path) -> tuple[str, bool]:
    parts = [pkg_dir.name, *path.relative_to(pkg_dir).with_suffix("").parts]
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    if isinstance(test, ast.Attribute):
        return test.attr == "TYPE_CHECKING"
    return False


def import_nodes(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
    """(node, deferred, type_only) for every import statement in the tree."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool, bool]] = []

    def visit(node: ast.AST, deferred: bool, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append((child, deferred, type_only))
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                visit(child, True, type_only)
            elif isinstance(child, ast.If) and is_type_checking(child.test):
                for stmt in child.body:
                    visit_stmt(stmt, deferred, True)
                for stmt in child.orelse:
                    visit_stmt(stmt, deferred, type_only)
            else:
                visit(child, deferred, type_only)

    def visit_stmt(stmt: ast.stmt, deferred: bool, type_only: bool) -> None:
        # A statement directly inside an `if` branch: handle it like a child node.
        holder = ast.Module(body=[stmt], type_ignores=[])
        visit(holder, deferred, type_only)

    visit(tree, False, False)
    return found


def targets(mod: Module, node: ast.Import | ast.ImportFrom, names: set[str]) -> list[str]:
    """The package-internal modules an import statement points at."""
    top = next(iter(names)).split(".")[0]
    out: list[str] = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name == top or alias.name.startswith(top + "."):
                out.append(longest_known(alias.name, names))
        return out
    if node.level:
        base = mod.name.split(".")
        if not mod.is_package:
            base = base[:-1]
        if node.level > 1:
            base = base[: len(base) - (node.level - 1)]
        if not base:
            return out  # beyond the top-level package: not ours
        pkg = ".".join(base + ([node.module] if node.module else []))
    else:
        if node.module is None or not (node.module == top or node.module.startswith(top + ".")):
            return out
        pkg = node.module
    for alias in node.names:
        sub = f"{pkg}.{alias.name}"
        out.append(sub if sub in names else longest_known(pkg, names))
    return out


def longest_known(name: str, names: set[str]) -> str:
    parts = name.split(".")
    while parts and ".".join(parts) not in names:
        parts.pop()
    return ".".join(parts) if parts else name


def ignored(src: Module, dst: str) -> bool:
    if dst == src.name:
        return True  # `from . import x` inside a package resolving to itself, etc.
    if src.name.startswith(dst + "."):
        return True  # a module importing one of its parent packages' __init__ is fine
    # a package __init__ importing its own children (re-exports)
    return src.is_package and dst.startswith(src.name + ".")


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; groups of more than one module only."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop(0)
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return sorted(groups)


def circles_in(group: list[str], graph: dict[str, set[str]]) -> list[list[str]]:
    """Elementary circles inside one group, each starting at its smallest module."""
    members = set(group)
    found: list[list[str]] = []
    for start in group:
        path = [start]

        def walk(node: str, start: str = start, path: list[str] = path) -> None:
            for nxt in sorted(graph[node] & members):
                if len(found) >= MAX_CIRCLES_PER_GROUP:
                    return
                if nxt == start:
                    found.append([*path, start])
                elif nxt > start and nxt not in path:
                    path.append(nxt)
                    walk(nxt)
                    path.pop()

        walk(start)
    return found


def unit_of(module: str) -> str | None:
    """The top-level subpackage or module a module belongs to (``None``: the package)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def main(argv: list[str] | None = None) -> int:
    default_pkg = Path(__file__).resolve().parent.parent / "splitdask"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package", nargs="?", type=Path, default=default_pkg)
    parser.add_argument("--max-module-lines", type=int, default=450)
    parser.add_argument("--max-class-lines", type=int, default=300)
    args = parser.parse_args(argv)
    pkg_dir: Path = args.package.resolve()
    if not (pkg_dir / "__init__.py").is_file():
        print(f"{pkg_dir}: not a package (no __init__.py)", file=sys.stderr)
        return 2
    root = pkg_dir.parent

    modules: dict[str, Module] = {}
    for path in sorted(pkg_dir.rglob("*.py")):
        if any(part.startswith(".") or part == "__pycache__" for part in path.parts):
            continue
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(root).as_posix()
        try:
            tree = ast.parse(text, filename=rel)
        except SyntaxError as exc:
            print(f"{rel}:{exc.lineno}: does not parse: {exc.msg}", file=sys.stderr)
            return 2
        name, is_package = module_name(pkg_dir, path)
        modules[name] = Module(name, path, rel, is_package, tree, len(text.splitlines()))
    names = set(modules)

    big_modules = [m for m in modules.values() if m.lines > args.max_module_lines]
    for m in big_modules:
        print(f"{m.rel}: {m.lines} lines (limit {args.max_module_lines})")

    big_classes = 0
    for m in modules.values():
        for node in ast.walk(m.tree):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                length = node.end_lineno - first + 1
                if length > args.max_class_lines:
                    big_classes += 1
                    print(
                        f"{m.rel}:{node.lineno}: class {node.name}: {length} lines"
                        f" (limit {args.max_class_lines})"
                    )

    edges: list[Edge] = []
    for m in modules.values():
        for node, deferred, type_only in import_nodes(m.tree):
            for dst in targets(m, node, names):
                if dst in names and not ignored(m, dst):
                    edges.append(Edge(m.name, dst, m.rel, node.lineno, deferred, type_only))

    graph: dict[str, set[str]] = {name: set() for name in names}
    where: dict[tuple[str, str], list[Edge]] = {}
    for e in edges:
        if not e.type_only:
            graph[e.src].add(e.dst)
            where.setdefault((e.src, e.dst), []).append(e)

    n_circles = 0
    for group in strongly_connected(graph):
        circles = circles_in(group, graph)
        for circle in circles:
            n_circles += 1
            print("import circle: " + " -> ".join(circle))
            for a, b in itertools.pairwise(circle):
                for e in where[(a, b)]:
                    how = "deferred, in a function" if e.deferred else "module level"
                    print(f"    {e.path}:{e.line}: {a} imports {b} ({how})")
        if len(circles) >= MAX_CIRCLES_PER_GROUP:
            print(f"    (listing stopped at {MAX_CIRCLES_PER_GROUP} circles among {group})")

    n_against = 0
    rank = {unit: k for k, units in enumerate(LAYERS) for unit in units}
    for e in sorted(set(edges), key=lambda e: (e.path, e.line, e.dst)):
        src, dst = unit_of(e.src), unit_of(e.dst)
        if src is None or dst is None or src == dst:
            continue  # the package's __init__, or a unit's own modules
        if src not in rank or dst not in rank:
            n_against += 1
            missing = src if src not in rank else dst
            print(f"{e.path}:{e.line}: unit {missing!r} is in no layer (add it to LAYERS)")
        elif rank[dst] > rank[src]:
            n_against += 1
            how = "type-only" if e.type_only else "deferred" if e.deferred else "module level"
            print(
                f"{e.path}:{e.line}: {e.src} imports {e.dst} ({how}): layer {rank[src]} "
                f"imports layer {rank[dst]}"
            )

    print("layers, lowest first (each imports only its own layer and lower ones):")
    for k, units in enumerate(LAYERS):
        print(f"  {k} " + ", ".join(units))

    type_edges = sorted({(e.src, e.dst) for e in edges if e.type_only})
    if type_edges:
        shown = ", ".join(f"{a} -> {b}" for a, b in type_edges)
        print(f"type-only imports (under TYPE_CHECKING, not counted for circles): {shown}")

    print(
        f"{len(modules)} modules, {len(big_modules)} over {args.max_module_lines} lines, "
        f"{big_classes} classes over {args.max_class_lines}, {n_circles} import circles, "
        f"{n_against} imports against the layers"
    )
    return 1 if big_modules or big_classes or n_circles or n_against else 0


if __name__ == "__main__":
    sys.exit(main())
