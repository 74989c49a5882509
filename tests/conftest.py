"""Shared test fixtures: repository paths, the real-data folder, and running Snakemake on a config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"
TINY_CONFIG = REPO / "tests" / "configs" / "tiny.yaml"
# Merged after TINY_CONFIG: the same phantoms as an experiment's corpus, evaluated on themselves and on tiny_b.
TINY_TRANSFER = REPO / "tests" / "configs" / "tiny_transfer.yaml"
PHANTOM_FINDINGS = ["COVID-19", "Lung_Opacity", "Viral_Pneumonia"]
# A dataset section for multi-label runs on multi-finding phantoms (several findings per image, or none).
MULTILABEL_PHANTOMS = {
    "task": "multilabel",
    "findings": PHANTOM_FINDINGS,
    "synthetic": {"multi_finding": True, "finding_probability": 0.35},
}


def image_only_methods() -> dict:
    """`pretrain.methods` and `finetune.inits` of the default config without the methods that read reports: what a
    config states for a dataset without reports (cxrmim.plan.check_reports refuses those methods there)."""
    from cxrmim import registry
    from cxrmim.config import load_config

    default, readers = load_config(), set(registry.methods(reads_reports=True))
    return {
        "pretrain": {"methods": [m for m in default["pretrain"]["methods"] if m not in readers]},
        "finetune": {"inits": [m for m in default["finetune"]["inits"] if m not in readers]},
    }


def snakemake(
    workdir: Path, *args: str, configs: tuple[Path, ...] = (TINY_CONFIG,), check: bool = True, project: Path = REPO
) -> subprocess.CompletedProcess:
    """Run the workflow of `project` (this repository, or a copy) in `workdir` with its default config + `configs`."""
    exe = shutil.which("snakemake", path=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    # Targets go first: --configfile takes every following word as a file.
    cmd = [
        exe,
        *args,
        "--snakefile",
        str(project / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        "--configfile",
        str(project / "workflow_config.yaml"),
        *map(str, configs),
    ]
    result = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, check=False, text=True)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
        )
    return result


@pytest.fixture(autouse=True, scope="session")
def single_thread():
    """Tiny test models gain nothing from intra-op threads; on a shared 2-core machine they are much slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def realdata() -> Path:
    """The shared real chest X-ray samples, or skip when this checkout has none beside it."""
    if not REALDATA.is_dir():
        pytest.skip(f"no real data at {REALDATA} (only present beside the project's CI checkout)")
    return REALDATA
