"""Imports run one way: cxrmim.analysis never imports cxrmim.train, and cxrmim.train never imports cxrmim.analysis."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {"cxrmim.analysis": "cxrmim.train", "cxrmim.train": "cxrmim.analysis"}


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


def test_analysis_and_train_do_not_import_each_other() -> None:
    assert forbidden_imports(REPO / "src") == []


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
