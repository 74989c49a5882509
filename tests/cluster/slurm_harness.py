"""Stand up a one-node SLURM (munged, slurmctld, slurmd) on this machine for tests, and tear it down again.

Needs root and apt-get (Debian): the packages are installed on first use. Every daemon runs in the foreground
as our own child, so we know its PID and stop exactly what we started. A fake GRES `gpu` backed by /dev/null
lets GPU jobs be scheduled; SLURM then sets CUDA_VISIBLE_DEVICES although no CUDA device exists.

Run by hand: `python tests/cluster/slurm_harness.py` starts a cluster, submits one job, and stops it again.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("munge", "slurmctld", "slurmd", "slurm-client")
DAEMONS = {"munged": "/usr/sbin/munged", "slurmctld": "/usr/sbin/slurmctld", "slurmd": "/usr/sbin/slurmd"}
CLIENTS = ("sbatch", "squeue", "scontrol", "sinfo", "scancel")
NODE = "cxrnode"
PARTITION = "cxrtest"
MUNGE_SOCKET_DIR = Path("/run/munge")
# The slurm jobstep plugin strips SLURM_* (SLURM_CONF too) before `srun` inside a job, so srun only finds the
# config at the default path: ours goes there while the cluster runs, and whatever was there comes back after.
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")


class HarnessError(RuntimeError):
    """The cluster could not be started (the message says which step and shows its log)."""


@dataclass
class SlurmCluster:
    """A running one-node cluster: its folder, the env that points clients at it, and the PIDs we own."""

    root: Path
    env: dict[str, str]
    partition: str = PARTITION
    node: str = NODE
    pids: dict[str, int] = field(default_factory=dict)
    conf_backup: Path | None = None
    conf_installed: bool = False
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    stray_before: set[int] = field(default_factory=set)

    def run(self, *cmd: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster."""
        result = subprocess.run(cmd, env=self.env, capture_output=True, check=False, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise HarnessError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def log(self, name: str) -> str:
        """The text of one daemon's log file (empty when it wrote none)."""
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def unavailable_reason() -> str | None:
    """Why a SLURM cluster cannot be stood up here, or None when it can."""
    if sys.platform != "linux":
        return "the SLURM harness needs Linux"
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return 'snakemake-executor-plugin-slurm is not installed (pip install -e ".[slurm]")'
    if os.geteuid() != 0:
        return "the SLURM harness must run as root (it installs packages and starts daemons)"
    if not all(Path(p).exists() for p in DAEMONS.values()) and shutil.which("apt-get") is None:
        return "SLURM is not installed and apt-get is not available to install it"
    return None


def installed() -> bool:
    """True when every daemon and client binary is present."""
    return all(Path(p).exists() for p in DAEMONS.values()) and all(shutil.which(c) for c in CLIENTS)


def install_packages(timeout: float = 400) -> None:
    """apt-get install the SLURM packages, refreshing the package lists only when the first try fails."""
    if installed():
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    result = subprocess.run(install, env=env, capture_output=True, check=False, text=True, timeout=timeout)
    if result.returncode != 0:
        update = ["apt-get", "update", "-q"]
        subprocess.run(update, env=env, capture_output=True, check=False, text=True, timeout=timeout)
        result = subprocess.run(install, env=env, capture_output=True, check=False, text=True, timeout=timeout)
    if result.returncode != 0 or not installed():
        raise HarnessError(
            f"apt-get install {' '.join(PACKAGES)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )


def free_port() -> int:
    """A TCP port nobody listens on now (so a second SLURM on the machine cannot collide with ours)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_memory_mb() -> int:
    """About three quarters of physical memory: what the node offers to jobs."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return max(1000, total * 3 // 4)


def write_config(root: Path) -> Path:
    """slurm.conf and gres.conf for one node on 127.0.0.1 with this machine's CPUs and a fake GPU."""
    host = socket.gethostname().split(".")[0]
    lines = [
        "ClusterName=cxrmim",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={free_port()}",
        f"SlurmdPort={free_port()}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'slurmd.log'}",
        # No cgroups without systemd: track processes by /proc and bind no tasks.
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "DefMemPerCPU=1000",  # else a job without --mem is given the whole node
        "MinJobAge=600",  # finished jobs stay visible to squeue/scontrol for the test's checks
        "ReturnToService=2",
        "SlurmdParameters=config_overrides",  # trust the node line even if slurmd counts differently
        # Without slurmdbd there is no sacct; a plain-text job completion log keeps the history instead.
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={root / 'jobcomp.txt'}",
        "MpiDefault=none",
        # Records the GPU each job step was handed, so tests can see what SLURM exported to the job.
        f"TaskProlog={root / 'task_prolog.sh'}",
        "GresTypes=gpu",
        f"NodeName={NODE} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} RealMemory={node_memory_mb()} "
        "Gres=gpu:1 State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
    ]
    (root / "state").mkdir(parents=True, exist_ok=True)
    (root / "spool").mkdir(parents=True, exist_ok=True)
    prolog = root / "task_prolog.sh"
    prolog.write_text(
        "#!/bin/sh\n"
        f'echo "job=$SLURM_JOB_ID step=$SLURM_STEP_ID cuda=${{CUDA_VISIBLE_DEVICES-unset}}" >> {root / "task_env.log"}\n'
    )
    prolog.chmod(0o755)
    conf = root / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    # A GRES needs a device file or the node turns INVAL; /dev/null stands in for the GPU.
    (root / "gres.conf").write_text(f"NodeName={NODE} Name=gpu File=/dev/null\n")
    return conf


def install_default_conf(cluster: SlurmCluster) -> None:
    """Put our slurm.conf at the default path (see DEFAULT_CONF), keeping any existing file aside."""
    DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
    if DEFAULT_CONF.exists() or DEFAULT_CONF.is_symlink():
        cluster.conf_backup = cluster.root / "slurm.conf.orig"
        shutil.move(DEFAULT_CONF, cluster.conf_backup)
    shutil.copy(cluster.root / "slurm.conf", DEFAULT_CONF)
    cluster.conf_installed = True


def restore_default_conf(cluster: SlurmCluster) -> None:
    """Remove our slurm.conf from the default path and put back what was there before."""
    if cluster.conf_installed:
        DEFAULT_CONF.unlink(missing_ok=True)
        cluster.conf_installed = False
    if cluster.conf_backup is not None and cluster.conf_backup.exists():
        shutil.move(cluster.conf_backup, DEFAULT_CONF)
        cluster.conf_backup = None


def wait_for(what: str, ready, deadline_s: float, cluster: SlurmCluster | None = None, interval: float = 0.3) -> None:
    """Poll `ready()` until it is true; raise with the daemon logs once the deadline passes."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(interval)
    logs = ""
    if cluster is not None:
        logs = "\n".join(f"--- {n}.log\n{cluster.log(n)[-1500:]}" for n in ("munged", "slurmctld", "slurmd"))
    raise HarnessError(f"timed out after {deadline_s:.0f} s waiting for {what}\n{logs}")


def munge_works(env: dict[str, str]) -> bool:
    """True when a credential can be created and decoded through the running munged."""
    try:
        cred = subprocess.run(["munge", "-n"], env=env, capture_output=True, check=False, timeout=5)
        if cred.returncode != 0:
            return False
        decoded = subprocess.run(["unmunge"], input=cred.stdout, env=env, capture_output=True, check=False, timeout=5)
        return decoded.returncode == 0
    except subprocess.TimeoutExpired:
        return False


def spawn(cluster: SlurmCluster, name: str, cmd: list[str], **kwargs) -> None:
    """Start one daemon in the foreground as our child, logging to root/<name>.log, and remember its PID."""
    # A new session: pytest's Ctrl-C does not reach the daemons before teardown can stop them in order.
    with open(cluster.root / f"{name}.stdout", "wb") as out:  # the daemon keeps its own copy of the descriptor
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=cluster.env,
            start_new_session=True,
            **kwargs,
        )
    cluster.processes[name] = proc
    cluster.pids[name] = proc.pid


def start_munged(cluster: SlurmCluster) -> None:
    """Run munged as user munge unless a working one is already there (then it is not ours to stop)."""
    if munge_works(cluster.env):
        return
    if not Path("/etc/munge/munge.key").exists():
        subprocess.run(["mungekey", "--create"], check=True, capture_output=True, timeout=30)
        shutil.chown("/etc/munge/munge.key", "munge", "munge")
    MUNGE_SOCKET_DIR.mkdir(parents=True, exist_ok=True)
    shutil.chown(MUNGE_SOCKET_DIR, "munge", "munge")
    for folder in ("/var/lib/munge", "/var/log/munge"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.chown(folder, "munge", "munge")
    # --force: a stale socket or lock left by a killed munged must not stop a new one.
    spawn(
        cluster,
        "munged",
        [DAEMONS["munged"], "--foreground", "--force", f"--log-file={cluster.root / 'munged.log'}"],
        user="munge",
        group="munge",
    )
    (cluster.root / "munged.log").touch()
    shutil.chown(cluster.root / "munged.log", "munge", "munge")
    wait_for("munged", lambda: munge_works(cluster.env), 20, cluster)


def node_state(cluster: SlurmCluster) -> str:
    """The node's state as sinfo prints it (idle, mix, alloc, drain, inval, down, ...)."""
    result = cluster.run("sinfo", "-h", "-N", "-n", NODE, "-o", "%T", check=False, timeout=10)
    return result.stdout.strip().lower()


def node_ready(cluster: SlurmCluster) -> bool:
    """True when the node accepts jobs; resumes a node that came up drained or invalid."""
    state = node_state(cluster)
    if any(bad in state for bad in ("drain", "inval", "down")):
        cluster.run("scontrol", "update", f"nodename={NODE}", "state=resume", check=False, timeout=10)
        return False
    return state.startswith(("idle", "mix", "alloc"))


def start_cluster(root: Path) -> SlurmCluster:
    """Install if needed, write the config under `root`, start munged, slurmctld and slurmd, wait until idle."""
    install_packages()
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)  # munged (user munge) writes its log here
    conf = write_config(root)
    env = dict(os.environ, SLURM_CONF=str(conf))
    cluster = SlurmCluster(root=root, env=env, stray_before=set(step_daemon_pids()))
    try:
        install_default_conf(cluster)
        start_munged(cluster)
        spawn(cluster, "slurmctld", [DAEMONS["slurmctld"], "-D", "-i", "-f", str(conf)])
        wait_for(
            "slurmctld",
            lambda: (
                cluster.run("scontrol", "ping", check=False, timeout=10).returncode == 0
                and "UP" in cluster.run("scontrol", "ping", check=False, timeout=10).stdout
            ),
            30,
            cluster,
        )
        spawn(cluster, "slurmd", [DAEMONS["slurmd"], "-D", "-N", NODE, "-f", str(conf)])
        wait_for("the node to become idle", lambda: node_ready(cluster), 40, cluster, interval=1)
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def step_daemon_pids() -> list[int]:
    """PIDs of slurmstepd processes (one per running job step) on this machine."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "slurmstepd":
                    pids.append(int(entry.name))
    return pids


def stop_process(name: str, proc: subprocess.Popen, grace_s: float = 10) -> None:
    """SIGTERM one daemon we started, SIGKILL it once the grace period is over, and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            # slurmd can ignore SIGTERM while it retries a dead controller: kill it.
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=10)


def cancel_jobs(cluster: SlurmCluster, deadline_s: float = 20) -> None:
    """Cancel every job still queued or running so no job step outlives the daemons."""
    if "slurmctld" not in cluster.processes or cluster.processes["slurmctld"].poll() is not None:
        return
    cluster.run("scancel", "--partition", cluster.partition, check=False, timeout=10)
    with contextlib.suppress(HarnessError):
        wait_for(
            "jobs to end",
            lambda: not cluster.run("squeue", "-h", "-t", "PD,R,CG", check=False, timeout=10).stdout.strip(),
            deadline_s,
        )


def stop_cluster(cluster: SlurmCluster) -> None:
    """Stop what we started, in reverse order (slurmd, slurmctld, munged), then any job step they left."""
    with contextlib.suppress(Exception):
        cancel_jobs(cluster)
    for name in ("slurmd", "slurmctld", "munged"):
        if name in cluster.processes:
            stop_process(name, cluster.processes[name])
    for pid in set(step_daemon_pids()) - cluster.stray_before:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    restore_default_conf(cluster)


def our_daemons_alive(cluster: SlurmCluster) -> list[str]:
    """Names of daemons we started that are still running (should be empty after stop_cluster)."""
    return [name for name, proc in cluster.processes.items() if proc.poll() is None]


@contextlib.contextmanager
def slurm_cluster(root: Path | None = None) -> Iterator[SlurmCluster]:
    """A running cluster for the duration of the `with` block; always stopped afterwards."""
    own_root = root is None
    # Short paths: slurmd puts unix sockets in its spool folder (108-byte limit).
    root = Path(tempfile.mkdtemp(prefix="cxrslurm-")) if root is None else root
    cluster = start_cluster(root)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
        if own_root:
            shutil.rmtree(root, ignore_errors=True)


def task_environments(cluster: SlurmCluster) -> dict[str, set[str]]:
    """Job id -> the CUDA_VISIBLE_DEVICES values its steps saw ("unset" when SLURM exported none)."""
    seen: dict[str, set[str]] = {}
    path = cluster.root / "task_env.log"
    for line in path.read_text().splitlines() if path.exists() else []:
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        seen.setdefault(fields.get("job", ""), set()).add(fields.get("cuda", "unset"))
    return seen


def job_ids_in_history(cluster: SlurmCluster) -> dict[str, str]:
    """Job id -> job name of every job the controller still knows or the completion log recorded."""
    jobs: dict[str, str] = {}
    listing = cluster.run("squeue", "-h", "-a", "-t", "all", "-o", "%i %j", check=False).stdout
    for line in listing.splitlines():
        job_id, _, name = line.strip().partition(" ")
        jobs[job_id] = name
    comp = cluster.root / "jobcomp.txt"
    if comp.exists():
        for line in comp.read_text().splitlines():
            fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
            if "JobId" in fields:
                jobs.setdefault(fields["JobId"], fields.get("Name", ""))
    return jobs


def main() -> int:
    """Smoke test by hand: start, run one GPU job, print what it saw, stop."""
    reason = unavailable_reason()
    if reason:
        print(f"skipped: {reason}")
        return 0
    with slurm_cluster() as cluster:
        out = cluster.root / "smoke.out"
        cluster.run(
            "sbatch",
            "--wait",
            "--gpus=1",
            "--mem=100",
            "-o",
            str(out),
            "--wrap",
            "echo CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES",
            timeout=60,
        )
        print(out.read_text().strip())
        cluster.run("sbatch", "--wait", "--mem=100", "--wrap", "true", timeout=60)
        print(job_ids_in_history(cluster), task_environments(cluster))
    print("alive after stop:", our_daemons_alive(cluster))
    return 0


if __name__ == "__main__":
    sys.exit(main())
