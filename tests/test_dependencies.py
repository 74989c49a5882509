"""Declared dependencies match the imports, and the conda envs hold the same pins and what their rules import."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from cxrmim.codebase import imported_modules, module_closure

tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml with the standard library")

REPO = Path(__file__).resolve().parents[1]
# Declared but never imported by our code, each for a reason.
RUNTIME_ONLY = {
    "pylibjpeg": "pydicom's decoder for compressed DICOM pixel data (a plugin pydicom finds)",
    "pylibjpeg-openjpeg": "pydicom's JPEG 2000 decoder plugin",
    "pylibjpeg-libjpeg": "pydicom's JPEG / JPEG-LS decoder plugin",
    "snakemake": "the workflow engine (the Snakefile imports snakemake.utils)",
    "snakemake-executor-plugin-slurm": "Snakemake's SLURM executor (`--executor slurm`)",
    "pygments": "code highlighting in `snakemake --report`",
    "snakefmt": "the Snakefile formatter .ci/run checks with",
    "ruff": "the Python linter and formatter .ci/run checks with",
    "pytest-xdist": "runs the test files on every core (`-n auto --dist loadfile` in pyproject's pytest addopts)",
}
# Import names whose distribution name differs, for packages not installed where the test runs.
KNOWN_DISTRIBUTIONS = {"PIL": "pillow", "yaml": "pyyaml", "sklearn": "scikit-learn", "skimage": "scikit-image"}


def pyproject() -> dict:
    """The parsed pyproject.toml."""
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def declared() -> dict[str, Requirement]:
    """Every requirement of the package and its extras, by canonical name."""
    project = pyproject()["project"]
    specs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {canonicalize_name(Requirement(s).name): Requirement(s) for s in specs}


@cache
def installed_distributions() -> dict[str, list[str]]:
    """Top-level module -> distributions providing it, for what is installed (slow to compute: once)."""
    return packages_distributions()


def distribution(module: str) -> str:
    """The canonical distribution name that provides a top-level module."""
    top = module.split(".")[0]
    found = installed_distributions().get(top)
    return canonicalize_name(found[0] if found else KNOWN_DISTRIBUTIONS.get(top, top))


# Test helpers imported by name from their own folder (conftest, the cluster harness).
LOCAL_MODULES = {p.stem for p in (REPO / "tests").rglob("*.py")}


def is_third_party(module: str) -> bool:
    """Neither the standard library, nor this package, nor a test helper."""
    top = module.split(".")[0]
    return top not in sys.stdlib_module_names and top != "cxrmim" and top not in LOCAL_MODULES


@cache
def third_party_closure(path: Path) -> frozenset[str]:
    """Distributions a script needs: its third-party imports and those of every cxrmim module it reaches."""
    files = (Path(path).resolve(), *module_closure(path))
    return frozenset(distribution(m) for f in files for m in imported_modules(f) if is_third_party(m))


def python_files(*folders: str) -> list[Path]:
    """Python files under the given repository folders."""
    return [p for folder in folders for p in sorted((REPO / folder).rglob("*.py"))]


def test_every_imported_module_is_declared():
    names = set(declared())
    missing = {}
    for path in python_files("src", "scripts", "tests", "benchmarks"):
        for module in imported_modules(path):
            if is_third_party(module) and distribution(module) not in names:
                missing.setdefault(distribution(module), path.relative_to(REPO).as_posix())
    assert not missing, f"imported but not in pyproject.toml (package: first file importing it): {missing}"


def test_every_declared_package_is_imported():
    used = {
        distribution(m)
        for p in python_files("src", "scripts", "tests", "benchmarks")
        for m in imported_modules(p)
        if is_third_party(m)
    }
    unused = set(declared()) - used - {canonicalize_name(n) for n in RUNTIME_ONLY}
    assert not unused, f"declared in pyproject.toml but never imported: {sorted(unused)}; drop them or say why"


def test_upper_caps_are_the_deliberate_ones():
    capped = {
        name for name, req in declared().items() if any(s.operator in ("<", "<=", "==", "~=") for s in req.specifier)
    }
    assert capped == {"torch", "snakefmt", "ruff", "snakemake-executor-plugin-slurm"}, capped


def rule_envs() -> dict[str, tuple[str, str]]:
    """Each rule with a `conda:` env: (script file, env file name), read from rules/*.smk."""
    found = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"^rule ", smk.read_text(), flags=re.MULTILINE)[1:]:
            name = block.split(":", 1)[0]
            script = re.search(r'script\("([^"]+)"\)', block)
            env = re.search(r'conda:\s*"\.\./envs/([^"]+)"', block)
            assert env, f"rule {name} in {smk.name} has no conda env"
            found[name] = (script.group(1), env.group(1))
    return found


def env_pip(env_file: str) -> dict[str, str]:
    """The pip requirements of an env file, by canonical name."""
    env = yaml.safe_load((REPO / "envs" / env_file).read_text())
    pips = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pips) == 1, f"envs/{env_file}: expected one pip: section"
    return {canonicalize_name(Requirement(r).name): r for r in pips[0]}


@pytest.mark.parametrize("env_file", sorted(p.name for p in (REPO / "envs").glob("*.yaml")))
def test_env_holds_third_party_pins_only_same_as_pyproject(env_file: str):
    text = (REPO / "envs" / env_file).read_text()
    assert "-e " not in text and ".." not in text, (
        f"envs/{env_file} installs local code; the rules put src/ on PYTHONPATH"
    )
    pins = declared()
    for name, line in env_pip(env_file).items():
        assert name in pins, f"envs/{env_file} has {line!r}, which pyproject.toml does not declare"
        assert Requirement(line).specifier == pins[name].specifier, (
            f"envs/{env_file} pins {line!r} but pyproject.toml {str(pins[name])!r}; keep them equal"
        )


def test_each_rule_env_has_what_its_script_imports():
    envs = rule_envs()
    assert {"download", "prepare", "pretrain", "finetune", "tables", "report"} <= set(envs)
    for rule, (script, env_file) in envs.items():
        needed = third_party_closure(REPO / "scripts" / script)
        missing = needed - set(env_pip(env_file))
        assert not missing, (
            f"rule {rule} runs scripts/{script}, which imports {sorted(missing)}; add to envs/{env_file}"
        )


def test_closure_follows_package_imports():
    # pretrain reaches torch and timm only through cxrmim modules, never directly in the script.
    assert not {"torch", "timm"} & {
        distribution(m) for m in imported_modules(REPO / "scripts" / "pretrain.py") if is_third_party(m)
    }
    assert {"torch", "timm", "numpy"} <= third_party_closure(REPO / "scripts" / "pretrain.py")


@pytest.mark.slow
def test_envs_build_with_micromamba(tmp_path: Path):
    exe = shutil.which("micromamba") or shutil.which("mamba") or shutil.which("conda")
    if exe is None:
        pytest.skip(
            "no conda/mamba/micromamba: none is on PyPI or in Debian's packages here, and conda-forge "
            "(which the envs use) is not reachable from this workplace; the checks above cover the files"
        )
    for env_file in sorted((REPO / "envs").glob("*.yaml")):
        result = subprocess.run(
            [exe, "env", "create", "-y", "-p", str(tmp_path / env_file.stem), "-f", str(env_file)],
            capture_output=True,
            check=False,
            text=True,
            timeout=1800,
        )
        assert result.returncode == 0, result.stderr[-3000:]
