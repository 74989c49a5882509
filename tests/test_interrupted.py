"""Interrupted work through Snakemake: a stopped or killed pretraining job resumes from its epoch checkpoint,
ends with the same encoder as an uninterrupted run, and a failed job leaves no output a later run would trust."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, TINY_CONFIG, snakemake
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

RESULTS = Path("results") / "tiny"
OUTPUTS = ("encoder.safetensors", "autoencoder.safetensors", "history.csv")
STOP_ENV = "CXRMIM_STOP_AFTER_EPOCHS"


def write_override(folder: Path, method: str, epochs: int) -> Path:
    """Tiny config with one pretraining run (`method` at ratio 0.75) of `epochs` epochs."""
    path = folder / f"interrupt_{method}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "pretrain": {"methods": [method], "mask_ratios": [0.75], "epochs": epochs},
                "finetune": {"inits": [method, "scratch_vit-tiny"]},
            }
        )
    )
    return path


def encoder_target(method: str) -> str:
    """The encoder file of one pretraining run, as a Snakemake target."""
    return str(RESULTS / "pretrain" / f"{method}_r0.75_vit-tiny_s0" / "encoder.safetensors")


def run_dir(workdir: Path, method: str) -> Path:
    """The pretraining run's folder (declared outputs plus the undeclared checkpoint)."""
    return workdir / RESULTS / "pretrain" / f"{method}_r0.75_vit-tiny_s0"


def pretrain_log(workdir: Path, method: str) -> str:
    """The pretrain rule's log of the last attempt."""
    return (workdir / RESULTS / "logs" / "pretrain" / f"{method}_r0.75_vit-tiny_s0.log").read_text()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where the data stages already ran (both tests share them: pretrain settings do not touch them)."""
    folder = tmp_path_factory.mktemp("interrupted")
    snakemake(folder, str(RESULTS / "patch_validity" / "validity.npz"), str(RESULTS / "split" / "split.csv"))
    return folder


def encoders_equal(a: Path, b: Path) -> bool:
    """True when two safetensors files hold the same tensor names and bit-identical values."""
    left, right = load_file(str(a)), load_file(str(b))
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def fresh_reference(workdir: Path, method: str, configs: tuple[Path, ...]) -> Path:
    """Retrain the same run from scratch (checkpoint removed, job forced) and return a copy of the resumed encoder."""
    kept = workdir / f"resumed_{method}.safetensors"
    kept.write_bytes((workdir / encoder_target(method)).read_bytes())
    (run_dir(workdir, method) / "checkpoint.pt").unlink(missing_ok=True)
    snakemake(workdir, encoder_target(method), "--forcerun", "pretrain", configs=configs)
    assert "resumed" not in pretrain_log(workdir, method)
    return kept


def assert_no_trusted_outputs(workdir: Path, method: str, configs: tuple[Path, ...]) -> None:
    """No declared output of the interrupted job is left, and a dry run plans the job again."""
    left = [name for name in OUTPUTS if (run_dir(workdir, method) / name).exists()]
    assert not left, f"interrupted pretraining left outputs behind: {left}"
    plan = snakemake(workdir, encoder_target(method), "-n", configs=configs).stdout
    assert "rule pretrain:" in plan or "localrule pretrain:" in plan, plan[-2000:]


def test_stopped_pretraining_resumes_to_the_same_encoder(workdir: Path, monkeypatch: pytest.MonkeyPatch):
    method = "rgmim"
    configs = (TINY_CONFIG, write_override(workdir, method, epochs=3))
    # First attempt: the job stops after one epoch as if killed; its outputs are missing, so the job fails.
    monkeypatch.setenv(STOP_ENV, "1")
    first = snakemake(workdir, encoder_target(method), configs=configs, check=False)
    assert first.returncode != 0
    assert (run_dir(workdir, method) / "checkpoint.pt").exists()
    assert_no_trusted_outputs(workdir, method, configs)
    monkeypatch.delenv(STOP_ENV)
    # Second attempt: resumes after epoch 1 and finishes.
    snakemake(workdir, encoder_target(method), "--rerun-incomplete", configs=configs)
    log = pretrain_log(workdir, method)
    assert "resumed from" in log and "after epoch 1/3" in log, log
    history = (run_dir(workdir, method) / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 3, history  # header plus every epoch, the one before the stop included
    resumed = fresh_reference(workdir, method, configs)
    assert encoders_equal(resumed, workdir / encoder_target(method)), "resumed run differs from an uninterrupted one"


def wait_for_checkpoint(proc: subprocess.Popen, checkpoint: Path, deadline_s: float) -> None:
    """Block until the training job has written its first checkpoint (or fail on the deadline / early exit)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if checkpoint.exists():
            return
        if proc.poll() is not None:
            raise AssertionError(f"snakemake ended ({proc.returncode}) before any checkpoint was written")
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint after {deadline_s} s")


def snakemake_command(workdir: Path, configs: tuple[Path, ...], *args: str) -> list[str]:
    """The same command line conftest.snakemake builds, for a process we need to kill midway."""
    exe = Path(sys.executable).parent / "snakemake"
    return [
        str(exe),
        *args,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        "--configfile",
        str(REPO / "workflow_config.yaml"),
        *map(str, configs),
    ]


def test_killed_pretraining_resumes_with_rerun_incomplete(workdir: Path):
    tmp_path, method = workdir, "mae"
    epochs = 40  # long enough (about 10 s on CPU) to be killed in the middle
    configs = (TINY_CONFIG, write_override(tmp_path, method, epochs=epochs))
    # SIGKILL Snakemake and the job together, as a node failure or `kill -9` would.
    # The venv's bin first on PATH, as conftest.snakemake does: the rules call `python` even without activation.
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    proc = subprocess.Popen(
        snakemake_command(tmp_path, configs, encoder_target(method)),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_checkpoint(proc, run_dir(tmp_path, method) / "checkpoint.pt", deadline_s=240)
        time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    if (run_dir(tmp_path, method) / "encoder.safetensors").exists():
        pytest.skip("the job finished before it could be killed (machine too fast for this test)")
    # A killed Snakemake leaves its lock behind; `--unlock` is the documented way out.
    snakemake(tmp_path, "--unlock", configs=configs)
    assert_no_trusted_outputs(tmp_path, method, configs)
    snakemake(tmp_path, encoder_target(method), "--rerun-incomplete", configs=configs)
    log = pretrain_log(tmp_path, method)
    assert "resumed from" in log, log
    assert len((run_dir(tmp_path, method) / "history.csv").read_text().splitlines()) == 1 + epochs
    resumed = fresh_reference(tmp_path, method, configs)
    assert encoders_equal(resumed, tmp_path / encoder_target(method)), "resumed run differs from an uninterrupted one"
