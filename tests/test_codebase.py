"""The import closure that makes package modules inputs of the rules that run them."""

from __future__ import annotations

from pathlib import Path

from cxrmim.codebase import PACKAGE, module_closure

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def names(script: str) -> set[str]:
    """Closure of a stage script as paths relative to the package."""
    return {p.relative_to(PACKAGE).as_posix() for p in module_closure(SCRIPTS / script)}


def test_pretrain_script_reaches_the_shared_loop_and_its_parent_packages():
    closure = names("pretrain.py")
    assert {
        "train/pretrain.py",
        "train/loop.py",
        "train/checkpoint.py",
        "train/distributed.py",
        "models/mae.py",
        "models/masking.py",
        "cli.py",
        "__init__.py",
    } <= closure
    assert not any(name.startswith("analysis/") for name in closure)


def test_tables_script_never_reaches_training_code():
    closure = names("tables.py")
    assert "analysis/tables.py" in closure and "evaluation.py" in closure
    assert not any(name.startswith("train/") for name in closure)


def test_a_module_added_to_an_import_chain_is_found(tmp_path: Path):
    script = tmp_path / "stage.py"
    script.write_text("from cxrmim.data import splits\nimport cxrmim.io\n")
    closure = {p.relative_to(PACKAGE).as_posix() for p in module_closure(script)}
    assert {"data/splits.py", "io.py", "data/__init__.py", "__init__.py"} <= closure


def test_pretrain_scripts_reach_every_method_the_registry_builds():
    """Methods are built by name (registry.load_builder): their modules still rerun the pretraining stages."""
    from cxrmim.registry import builder_modules

    modules = {m.removeprefix("cxrmim.").replace(".", "/") + ".py" for m in builder_modules()}
    assert modules <= names("pretrain.py") and modules <= names("contrastive_pretrain.py")
    assert not any(name.startswith("train/") for name in names("tables.py"))
