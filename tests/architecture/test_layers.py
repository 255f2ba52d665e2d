"""The package is laid out as its pipeline: each layer imports only the layers before it.

An AST walk over every ``import`` statement of every module of ztbench, at module level and
inside functions alike, fails on an import that points back up the layer order, on a cycle
between modules, and on more than a handful of function-level imports of ztbench modules
(each of which must say why in a comment on the line before it).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ztbench"

# The layer order, lowest first. Layers that share a rank do not import each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("loss",),
    ("core",),
    ("io",),
    ("suite",),
    ("points",),
    ("reference",),
    ("candidates",),
    ("measure",),
    ("throughput",),
    ("fit",),
    ("report", "gate"),
    ("pipeline",),
    ("commands",),
    ("cli",),
)
RANK = {layer: i for i, group in enumerate(LAYERS) for layer in group}
MAX_FUNCTION_LEVEL = 5
MAX_TOP_LEVEL_MODULES = 10


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # dotted module name (the longest prefix that is a module of ztbench)
    line: int
    top_level: bool
    why: str  # the comment line just above a function-level import ("" if none)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str) -> str:
    """The module a dotted name refers to (``ztbench.gate.compare`` -> ``ztbench.gate``)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imports() -> Iterator[Import]:
    for name, path in MODULES.items():
        text = path.read_text()
        lines = text.splitlines()
        tree = ast.parse(text)
        top = {id(n) for n in tree.body}
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    mod = ".".join([*base, node.module] if node.module else base)
                else:
                    mod = node.module or ""
                targets = [f"{mod}.{a.name}" for a in node.names]
            else:
                continue
            above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
            for t in targets:
                if t == "ztbench" or t.startswith("ztbench."):
                    target = _resolve(t)
                    if target != name:
                        yield Import(name, target, node.lineno, id(node) in top,
                                     above if above.startswith("#") else "")  # fmt: skip


def layer(module: str) -> str:
    """The layer of a module: the first component below ``ztbench`` (the package root is
    the shipped loss's public face, so it ranks with ``loss``)."""
    parts = module.split(".")
    return "loss" if len(parts) == 1 else parts[1]


IMPORTS = list(_imports())


def test_every_module_has_a_layer() -> None:
    assert {layer(m) for m in MODULES} <= set(RANK), sorted({layer(m) for m in MODULES} - set(RANK))


def test_no_import_points_back_up_the_layer_order() -> None:
    bad = [
        f"{i.importer}:{i.line} ({layer(i.importer)}) imports {i.target} ({layer(i.target)})"
        for i in IMPORTS
        if layer(i.importer) != layer(i.target) and RANK[layer(i.target)] >= RANK[layer(i.importer)]
    ]
    assert bad == []


def test_no_import_cycle_between_modules() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for i in IMPORTS:
        # a package's __init__ re-exports its modules: that edge is not a dependency back
        if not i.importer.startswith(i.target + ".") and not i.target.startswith(i.importer + "."):
            graph[i.importer].add(i.target)
        elif i.target.startswith(i.importer + "."):
            graph[i.importer].add(i.target)
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append([*stack[stack.index(t):], t])
            elif t not in state:
                visit(t, [*stack, t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_few_function_level_imports_each_with_a_reason() -> None:
    inner = [i for i in IMPORTS if not i.top_level]
    listing = [f"{i.importer}:{i.line} -> {i.target} {i.why!r}" for i in inner]
    assert len({(i.importer, i.line) for i in inner}) <= MAX_FUNCTION_LEVEL, listing
    assert all(i.why for i in inner), listing


def test_few_modules_directly_under_the_package() -> None:
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


@pytest.mark.parametrize("group", LAYERS, ids=lambda g: "+".join(g))
def test_each_layer_exists(group: tuple[str, ...]) -> None:
    for name in group:
        assert (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file(), name
