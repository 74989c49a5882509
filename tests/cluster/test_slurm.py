"""The workflow on a real (one-node) SLURM through `--profile profiles/slurm`: jobs go through sbatch, GPU jobs
get CUDA_VISIBLE_DEVICES yet train on the CPU (cpu_fallback: the GPU is fake), and the outputs equal a local run of the same config.

Needs root and apt-get (CI has both); elsewhere it skips and says why. About 3 minutes on 2 cores."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, TINY_CONFIG, TINY_TRANSFER
from safetensors.torch import load_file
from slurm_harness import (
    SlurmCluster,
    job_ids_in_history,
    our_daemons_alive,
    slurm_cluster,
    task_environments,
    unavailable_reason,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# A cut-down tiny config: one pretraining run, a pretrained and a scratch init, one fraction, one seed.
# The test node's GPU is a fake GRES: GPU jobs are allowed to fall back to the CPU (else they fail fast).
REDUCED = {
    "pretrain": {"methods": ["rgmim"], "mask_ratios": [0.75], "cpu_fallback": True},
    "finetune": {"inits": ["rgmim", "scratch_vit-tiny"], "cpu_fallback": True},
    "label_fractions": {"fractions": [1.0], "seeds": [0]},
}
# Two datasets (tests/configs/tiny_transfer.yaml): pretraining on tiny, fine-tuning on tiny and on tiny_b.
RESULTS = Path("results") / "tiny"
OTHER = Path("results") / "tiny_b"
EXPERIMENT = Path("results") / "tiny_transfer"
GPU_RULES = ("pretrain", "finetune")
RUN_TIMEOUT_S = 480
# Wall-clock and host details that legitimately differ between two runs of the same job.
VOLATILE_KEYS = {"seconds", "time", "elapsed", "started", "finished", "host", "hostname", "images_per_s"}


def snakemake_cmd(workdir: Path, configs: tuple[Path, ...], *args: str) -> list[str]:
    """This repository's workflow on `configs` in `workdir` (targets and options before --configfile)."""
    exe = Path(sys.executable).parent / "snakemake"
    return [
        str(exe),
        *args,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(REPO / "workflow_config.yaml"),
        *map(str, configs),
    ]


def with_venv(env: dict[str, str]) -> dict[str, str]:
    """`env` with this interpreter's bin folder first on PATH (jobs call `python` and `snakemake`)."""
    return dict(env, PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""))


def start(cmd: list[str], workdir: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start a command in the background, its output going to workdir/snakemake.out."""
    with open(workdir / "snakemake.out", "w") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, cwd=workdir, env=with_venv(env), stdout=out, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen) -> None:
    """Wait for a background command (killing it after the deadline) and fail when it failed."""
    try:
        proc.wait(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log = Path(proc.args[proc.args.index("--directory") + 1]) / "snakemake.out"
    assert proc.returncode == 0, f"local run failed ({proc.returncode}):\n{log.read_text()[-6000:]}"


def run(cmd: list[str], workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run a command with a deadline; fail with the end of its output."""
    result = subprocess.run(
        cmd, cwd=workdir, env=with_venv(env), capture_output=True, check=False, text=True, timeout=RUN_TIMEOUT_S
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd[:3])} ... failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
    return result


def cluster_profile(folder: Path, cluster: SlurmCluster) -> Path:
    """profiles/slurm with only the site keys changed for the test cluster (and fast first status checks)."""
    config = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    config["default-resources"]["slurm_partition"] = cluster.partition
    config["default-resources"].pop("slurm_account", None)  # no accounting database here
    config["slurm-no-account"] = True
    config["slurm-init-seconds-before-status-checks"] = 1
    config["latency-wait"] = 5
    profile = folder / "profile"
    profile.mkdir()
    (profile / "config.yaml").write_text(yaml.safe_dump(config))
    return profile


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    """A one-node SLURM for this module, or a skip with the reason it cannot be stood up here."""
    reason = unavailable_reason()
    if reason and os.environ.get("CI"):
        pytest.fail(f"CI must run the SLURM test: {reason}")  # a silent skip would hide a broken CI setup
    if reason:
        pytest.skip(reason)
    with slurm_cluster() as running:
        yield running
    assert not our_daemons_alive(running), "SLURM daemons still running after teardown"


@pytest.fixture(scope="module")
def runs(cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The reduced tiny DAG once through SLURM and once locally (profiles/local), each in its own folder;
    also the config override and the test profile used."""
    base = tmp_path_factory.mktemp("slurm")
    reduced = base / "reduced.yaml"
    reduced.write_text(yaml.safe_dump(REDUCED))
    configs = (TINY_CONFIG, TINY_TRANSFER, reduced)
    folders = {"slurm": base / "slurm", "local": base / "local"}
    for folder in folders.values():
        folder.mkdir()
    profile = cluster_profile(base, cluster)
    # The local run goes alongside: SLURM jobs spend most of their time in the plugin's polling sleeps.
    local_env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    local = start(
        snakemake_cmd(folders["local"], configs, "--profile", str(REPO / "profiles" / "local"), "--cores", "1"),
        folders["local"],
        local_env,
    )
    try:
        result = run(snakemake_cmd(folders["slurm"], configs, "--profile", str(profile)), folders["slurm"], cluster.env)
    finally:
        finish(local)
    (folders["slurm"] / "snakemake.out").write_text(result.stdout + result.stderr)
    folders.update(reduced=reduced, profile=profile)
    return folders


def submitted_job_ids(folder: Path) -> dict[str, str]:
    """SLURM job id -> rule name, from Snakemake's own log of the run."""
    text = (folder / "snakemake.out").read_text()
    rule_of_job, rule = {}, None
    for line in text.splitlines():
        header = re.match(r"\s*rule (\w+):", line)
        rule = header.group(1) if header else rule
        number = re.match(r"\s*jobid: (\d+)", line)
        if number and rule:
            rule_of_job[number.group(1)] = rule
    ids = {
        m.group(2): rule_of_job.get(m.group(1), "?")
        for m in re.finditer(r"Job (\d+) has been submitted with SLURM jobid (\d+)", text)
    }
    assert ids, f"no 'submitted with SLURM jobid' lines in Snakemake's output:\n{text[-3000:]}"
    return ids


def test_jobs_went_through_sbatch(runs, cluster):
    ids = submitted_job_ids(runs["slurm"])
    history = job_ids_in_history(cluster)
    assert set(ids) <= set(history), (ids, history)
    rules = set(ids.values())
    assert {"download", "prepare", "patch_validity", "pretrain", "finetune"} <= rules, rules
    # Sub-second stages are localrules: the cluster never queues them.
    assert not {"split", "label_subset", "tables", "report"} & rules, rules
    # One kept SLURM log per job (slurm-keep-successful-logs), named by its job id.
    logs = {p.stem for p in (runs["slurm"] / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert set(ids) <= logs, (ids, logs)


def test_gpu_jobs_got_a_gpu_yet_ran_on_cpu(runs, cluster):
    ids = submitted_job_ids(runs["slurm"])
    seen = task_environments(cluster)
    for job_id, rule in ids.items():
        if rule in GPU_RULES:
            assert seen.get(job_id) == {"0"}, f"{rule} job {job_id} saw CUDA_VISIBLE_DEVICES {seen.get(job_id)}"
        else:
            assert seen.get(job_id) == {"unset"}, f"CPU-only {rule} job {job_id} was given a GPU: {seen.get(job_id)}"
    logs = runs["slurm"] / RESULTS / "logs"
    for log in [*logs.glob("pretrain/*.log"), *logs.glob("finetune/*/*.log")]:
        assert re.search(r"device cpu\b", log.read_text()), f"{log.name} does not say it ran on the CPU"
        assert "cpu_fallback is true, training on the CPU" in log.read_text(), f"{log.name}: no fallback warning"


def without_volatile(value):
    """A JSON value with wall-clock and host fields removed (recursively)."""
    if isinstance(value, dict):
        return {k: without_volatile(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [without_volatile(v) for v in value]
    return value


def test_outputs_equal_a_local_run(runs):
    slurm, local = (runs[k] / RESULTS for k in ("slurm", "local"))
    for rel in ("split/split.csv", "split/subsets/frac1_seed0.csv", "prepared/manifest.csv"):
        assert (slurm / rel).read_bytes() == (local / rel).read_bytes(), rel
    for rel in ("prepared/images.npy", "prepared/masks.npy"):
        assert np.array_equal(np.load(slurm / rel), np.load(local / rel)), rel
    with np.load(slurm / "patch_validity/validity.npz") as a, np.load(local / "patch_validity/validity.npz") as b:
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    left, right = (load_file(str(d / "pretrain/rgmim_r0.75_vit-tiny_s0/encoder.safetensors")) for d in (slurm, local))
    assert left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left), "encoders differ"
    for dataset in (RESULTS, OTHER):  # the corpus evaluated in-domain, and the second evaluation dataset
        folder = runs["slurm"] / dataset
        metrics = sorted(p.relative_to(folder) for p in folder.glob("finetune/*/*/metrics.json"))
        assert len(metrics) == 2, metrics
        for rel in metrics:
            a, b = (without_volatile(json.loads((runs[k] / dataset / rel).read_text())) for k in ("slurm", "local"))
            assert a == b, dataset / rel
    assert not (runs["slurm"] / OTHER / "pretrain").exists()  # pretraining runs once, on the corpus
    assert (runs["slurm"] / EXPERIMENT / "report.html").exists() and shutil.which("sbatch")


def wait_until(what: str, ready, deadline_s: float, interval: float = 0.2) -> None:
    """Poll `ready()` until true; fail once the deadline passes."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")


def release_requeued(cluster: SlurmCluster, job_id: str) -> None:
    """A requeued job waits 120 s (BeginTime) before it may start again: once it is pending, let it start now."""

    def state() -> str:
        return cluster.run("squeue", "-h", "-j", job_id, "-o", "%T %r", check=False).stdout.strip()

    # Updating earlier (still COMPLETING) is overwritten when the requeue takes effect.
    wait_until(f"job {job_id} to be pending again", lambda: state().startswith("PENDING"), 60, 0.5)
    if "BeginTime" in state():
        cluster.run("scontrol", "update", f"jobid={job_id}", "StartTime=now")


def test_requeued_pretraining_resumes(runs, cluster):
    """`scontrol requeue` (what preemption does) mid-training: the job restarts and resumes from its checkpoint."""
    workdir, epochs = runs["slurm"], 200  # long enough to requeue it midway (about 10 s of training on CPU)
    longer = workdir / "longer.yaml"
    longer.write_text(yaml.safe_dump({**REDUCED, "pretrain": {**REDUCED["pretrain"], "epochs": epochs}}))
    run_dir = workdir / RESULTS / "pretrain" / "rgmim_r0.75_vit-tiny_s0"
    out = workdir / "requeue.out"
    cmd = snakemake_cmd(
        workdir,
        (TINY_CONFIG, TINY_TRANSFER, runs["reduced"]),
        str(run_dir.relative_to(workdir) / "encoder.safetensors"),
        "--profile",
        str(runs["profile"]),
    )
    cmd[cmd.index("--configfile") + 1 :] = [str(REPO / "workflow_config.yaml"), str(TINY_CONFIG), str(longer)]
    with open(out, "w") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, env=with_venv(cluster.env), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until("the first checkpoint", lambda: (run_dir / "checkpoint.pt").exists() or proc.poll() is not None, 240)
        assert proc.poll() is None, out.read_text()[-3000:]
        job_id = re.findall(r"submitted with SLURM jobid (\d+)", out.read_text())[-1]
        cluster.run("scontrol", "requeue", job_id)
        release_requeued(cluster, job_id)
        proc.wait(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out.read_text()[-4000:]
    log = (workdir / RESULTS / "logs" / "pretrain" / "rgmim_r0.75_vit-tiny_s0.log").read_text()
    assert "resumed from" in log, log[-2000:]
    assert len((run_dir / "history.csv").read_text().splitlines()) == 1 + epochs
    steps = [line for line in (cluster.root / "task_env.log").read_text().splitlines() if f"job={job_id} " in line]
    assert len(steps) >= 2, f"job {job_id} did not run twice: {steps}"
