"""Imports run one way: each part of the package imports only the layers below it, and no module imports itself
back through a chain (a cycle works only while some import sits inside a function)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {"cxrmim.analysis": "cxrmim.train", "cxrmim.train": "cxrmim.analysis"}
# Bottom to top; a module may import its own part and the layers below. Parts of one layer never import each other
# (training and analysis run apart: tables never need torch training code; segment and diagnostics likewise).
LAYERS = (
    ("cxrmim.registry", "cxrmim.external_formats", "cxrmim.pixels", "cxrmim.io", "cxrmim.device"),
    ("cxrmim.cli", "cxrmim.codebase", "cxrmim.resources"),
    ("cxrmim.text",),
    ("cxrmim.data",),
    ("cxrmim.config", "cxrmim.inits", "cxrmim.evaluation", "cxrmim.optim", "cxrmim.models"),
    ("cxrmim.recipe",),  # per-init recipes: merged config sections, keyed by init names
    ("cxrmim.checks", "cxrmim.experiment"),  # the config cross-checks; datasets by name (both read by the plan)
    ("cxrmim.plan",),
    ("cxrmim.segment", "cxrmim.diagnostics"),
    ("cxrmim.train", "cxrmim.analysis"),
)


def module_name(path: Path, root: Path) -> str:
    """src/cxrmim/train/finetune.py -> cxrmim.train.finetune (a package's __init__ -> the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path) -> set[str]:
    """Absolute names of every module a file imports, relative imports resolved, `from x import y` as x and x.y."""
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


def within(name: str, package: str) -> bool:
    """`name` is `package` or one of its submodules."""
    return name == package or name.startswith(package + ".")


def forbidden_imports(root: Path) -> list[str]:
    """'importer -> imported' for every import that runs against FORBIDDEN under root (the folder holding cxrmim)."""
    found = []
    for path in sorted((root / "cxrmim").rglob("*.py")):
        importer = module_name(path, root)
        for source, target in FORBIDDEN.items():
            if within(importer, source):
                imported = sorted(imported_modules(path, root))
                found += [f"{importer} -> {name}" for name in imported if within(name, target)]
    return found


def part_of(name: str) -> str | None:
    """The LAYERS part a module belongs to (None for the package itself)."""
    return next((part for layer in LAYERS for part in layer if within(name, part)), None)


def layer_of(part: str) -> int:
    """Index of a part's layer."""
    return next(i for i, layer in enumerate(LAYERS) if part in layer)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports (function-level imports included), under root/cxrmim."""
    modules = {module_name(path, root): path for path in sorted((root / "cxrmim").rglob("*.py"))}
    imports = {name: imported_modules(path, root) for name, path in modules.items()}
    return {name: {m for m in found if m in modules and m != name} for name, found in imports.items()}


def wrong_way_imports(root: Path) -> list[str]:
    """'importer -> imported' for every import of a part in the same or a higher layer than the importer's."""
    found = []
    for importer, imported in import_graph(root).items():
        source = part_of(importer)
        assert source is not None or importer == "cxrmim", f"{importer}: add its part to LAYERS"
        for name in sorted(imported):
            target = part_of(name)
            if source and target and target != source and layer_of(target) >= layer_of(source):
                found.append(f"{importer} -> {name}")
    return found


def import_cycles(root: Path) -> list[list[str]]:
    """Every cycle of the module graph, each as the modules along it (depth-first search from every module)."""
    graph, cycles, done = import_graph(root), [], set()

    def visit(name: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(name, ())):
            if nxt in path:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in done:
                visit(nxt, [*path, nxt])
        done.add(name)

    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    return cycles


def test_analysis_and_train_do_not_import_each_other() -> None:
    assert forbidden_imports(REPO / "src") == []


def test_every_import_runs_down_the_layers() -> None:
    assert wrong_way_imports(REPO / "src") == []


def test_no_import_cycles() -> None:
    assert import_cycles(REPO / "src") == []


def test_the_layer_and_cycle_checks_find_what_they_forbid(tmp_path: Path) -> None:
    package = tmp_path / "cxrmim"
    for sub in ("models", "data", "train"):
        (package / sub).mkdir(parents=True)
        (package / sub / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "data" / "a.py").write_text("def f():\n    from cxrmim.models import m\n")  # data below models
    (package / "models" / "m.py").write_text("import cxrmim.train.t\n")
    (package / "train" / "t.py").write_text("from cxrmim.data import a\n")
    assert wrong_way_imports(tmp_path) == [
        "cxrmim.data.a -> cxrmim.models",
        "cxrmim.data.a -> cxrmim.models.m",
        "cxrmim.models.m -> cxrmim.train.t",
    ]
    assert import_cycles(tmp_path) == [["cxrmim.data.a", "cxrmim.models.m", "cxrmim.train.t", "cxrmim.data.a"]]


def test_the_check_finds_absolute_and_relative_imports(tmp_path: Path) -> None:
    """The walker must see the imports it is meant to forbid, in every spelling."""
    package = tmp_path / "cxrmim"
    for sub in ("analysis", "train"):
        (package / sub).mkdir(parents=True)
        (package / sub / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "analysis" / "tables.py").write_text("from ..train import finetune\n")
    (package / "analysis" / "figures.py").write_text("def f():\n    import cxrmim.train.pretrain\n")
    (package / "train" / "finetune.py").write_text("from cxrmim import analysis\nfrom cxrmim.evaluation import x\n")
    assert forbidden_imports(tmp_path) == [
        "cxrmim.analysis.figures -> cxrmim.train.pretrain",
        "cxrmim.analysis.tables -> cxrmim.train",
        "cxrmim.analysis.tables -> cxrmim.train.finetune",
        "cxrmim.train.finetune -> cxrmim.analysis",
    ]
