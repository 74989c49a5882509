"""Which files of this package a script runs, found from its import statements (no import is executed).

The workflow makes these files inputs of the rule that runs the script, so editing any module a stage reaches
reruns exactly that stage; a hand-kept list would miss modules as the package grows. Torch-free on purpose: the
Snakefile calls it while building the DAG.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from cxrmim.registry import builder_modules, reader_modules

PACKAGE = Path(__file__).resolve().parent
# A call of one of these names imports modules the registry names (method builders, dataset readers).
DYNAMIC_IMPORTS = {"load_builder": builder_modules, "load_reader": reader_modules}


def imported_modules(path: Path) -> set[str]:
    """Dotted names of every module a Python file imports (lazy imports inside functions included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            # `from cxrmim.data import splits` imports the module cxrmim.data.splits.
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Call):
            for called in {getattr(node.func, a, None) for a in ("attr", "id")} & set(DYNAMIC_IMPORTS):
                names |= set(DYNAMIC_IMPORTS[called]())
    return names


def package_file(module: str) -> Path | None:
    """The source file of a cxrmim module, or None for a name that is not one (e.g. an imported function)."""
    parts = module.split(".")[1:]
    if not parts:
        return PACKAGE / "__init__.py"
    for candidate in (PACKAGE.joinpath(*parts).with_suffix(".py"), PACKAGE.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def parent_packages(module_file: Path) -> list[Path]:
    """The `__init__.py` files Python runs before a module of this package (they are run code too)."""
    inits = []
    folder = module_file.parent
    while folder == PACKAGE or PACKAGE in folder.parents:
        init = folder / "__init__.py"
        if init.is_file() and init != module_file:
            inits.append(init)
        folder = folder.parent
    return inits


@cache
def module_closure(path: Path) -> tuple[Path, ...]:
    """Every cxrmim source file that `path` (a script or module) reaches through its imports, sorted."""
    seen: set[Path] = set()
    todo = [Path(path).resolve()]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for module in imported_modules(current):
            if module.split(".")[0] == "cxrmim" and (found := package_file(module)) is not None:
                todo += [found, *parent_packages(found)]
    return tuple(sorted(p for p in seen if PACKAGE in p.parents))
