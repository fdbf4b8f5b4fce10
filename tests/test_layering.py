"""The package's import layering: no import cycles, no import from a lower layer to a
higher one, and no module importing the package's ``__init__`` (it re-exports the
public API from the layers above everything else).

Layers, lowest first (a module may import its own group and lower layers only):

    core       top-level modules (model, graph, receptive, keys, checkpoint, ...), so3/, nn/
    inference  inference/
    fronts     ase/, lammps/, data/   (three groups: none imports another)
    workflows  train/, tasks/, engines/   (three groups: engines/ drives i-PI, OpenMM and
                                          torch-sim through ase/ and inference/)
    check      check/                 (the report card: any two ASE calculators side by side)
    learn      learn/                 (ends with the report card of its final potential)
    cli        cli.py

Every import counts, also those inside functions (a lazy import is still a dependency).
"""

import ast
from collections import defaultdict
from pathlib import Path

import tfn_md

RANK = {"core": 0, "inference": 1, "ase": 2, "lammps": 2, "data": 2, "train": 3, "tasks": 3,
        "engines": 3, "check": 4, "learn": 5, "cli": 6}


def group(module: str) -> str:
    """The layer group of a dotted module name of the package."""
    parts = module.split(".")[1:]
    if not parts:
        return "package"
    return parts[0] if parts[0] in RANK else "core"


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package at ``root``."""
    found = {}
    for path in root.rglob("*.py"):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports (anywhere in its code). ``from X import
    y`` counts as importing ``X.y`` where that is a module, else ``X``."""
    known = modules(root)
    graph = defaultdict(set)
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(base + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                           for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in known:  # import a.b.c of a module a.b
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def violations(graph: dict[str, set[str]], top: str) -> list[str]:
    """Imports of the package's __init__ (``top``) and imports across or up the layers."""
    bad = []
    for source, targets in sorted(graph.items()):
        for target in sorted(targets):
            a, b = group(source), group(target)
            if target == top and source != top:
                bad.append(f"{source} -> {target} (the package's __init__)")
            elif a not in ("package", b) and (b == "package" or RANK[b] >= RANK[a]):
                bad.append(f"{source} ({a}) -> {target} ({b})")
    return bad


def test_the_package_has_no_cycles_and_no_upward_imports():
    root = Path(tfn_md.__file__).resolve().parent
    graph = import_graph(root)
    found_cycles, found_violations = cycles(graph), violations(graph, "tfn_md")
    n_imports = sum(len(t) for t in graph.values())
    print(f"{len(modules(root))} modules, {n_imports} imports between them: "
          f"{len(found_cycles)} cycles, {len(found_violations)} upward or sideways imports")
    assert not found_cycles, f"import cycles: {found_cycles}"
    assert not found_violations, "imports against the layering:\n" + "\n".join(found_violations)
    assert graph["tfn_md.ase.calculator"] >= {"tfn_md.inference.engine"}  # it saw imports


def test_the_checker_finds_cycles_and_upward_imports(tmp_path):
    """The checks above can fail: a fake package with a cycle in its core, an import from
    the core up to inference/, a sideways import between front ends and an import of its
    __init__."""
    pkg = tmp_path / "pkg"
    for folder in ("", "inference", "ase", "lammps"):
        (pkg / folder).mkdir(exist_ok=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "model.py").write_text("def f():\n    from .validation import check\n")
    (pkg / "validation.py").write_text("from .model import f\nfrom .inference import engine\n")
    (pkg / "inference" / "engine.py").write_text("import pkg.keys  # not a module: the package\n")
    (pkg / "ase" / "calc.py").write_text("from ..lammps import mliap\nfrom .. import model\n")
    (pkg / "lammps" / "mliap.py").write_text("from pkg import version\n")
    graph = import_graph(pkg)
    assert cycles(graph) == [["pkg.model", "pkg.validation"]]
    assert violations(graph, "pkg") == [
        "pkg.ase.calc (ase) -> pkg.lammps.mliap (lammps)",
        "pkg.inference.engine -> pkg (the package's __init__)",
        "pkg.lammps.mliap -> pkg (the package's __init__)",
        "pkg.validation (core) -> pkg.inference.engine (inference)",
    ]
