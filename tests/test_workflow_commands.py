"""What the rules ask Snakemake to run, from dry runs: launch commands, paths, and the resources of every job."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from conftest import REPO, TINY_CONFIG, snakemake

ENCODER = "results/tiny/pretrain/rgmim_r0.75_vit-tiny_s0/encoder.safetensors"


def override(tmp_path: Path, name: str, data: dict) -> Path:
    """A config override file."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def shell_commands(output: str, rule: str) -> list[str]:
    """Shell commands of one rule's jobs in a `snakemake -n -p` output."""
    commands, current = [], None
    for line in output.splitlines():
        header = re.match(r"^(?:local)?rule (\w+):", line.strip())
        if header:
            current = header.group(1)
        elif line.startswith("Shell command:") and current == rule:
            commands.append(line.removeprefix("Shell command:").strip())
    return commands


def job_resources(output: str) -> dict[str, list[str]]:
    """The `resources:` lines of a dry run, by rule."""
    found: dict[str, list[str]] = {}
    rule = None
    for line in output.splitlines():
        header = re.match(r"^(?:local)?rule (\w+):", line.strip())
        if header:
            rule = header.group(1)
        elif line.strip().startswith("resources:") and rule:
            found.setdefault(rule, []).append(line.strip())
    return found


def pretrain_command(tmp_path: Path, gpus: int) -> str:
    """The pretraining command planned for one encoder with `gpus` GPUs per job."""
    gpu = override(
        tmp_path, f"gpu{gpus}", {"pretrain": {"resources": {"gpu": gpus, "mem_mb": 1000, "runtime": 10, "cpus": 1}}}
    )
    out = snakemake(tmp_path, ENCODER, "-n", "-p", configs=(TINY_CONFIG, gpu)).stdout
    (command,) = shell_commands(out, "pretrain")
    return command


def test_more_than_one_gpu_launches_torchrun(tmp_path: Path):
    single = pretrain_command(tmp_path, 1)
    double = pretrain_command(tmp_path, 2)
    script = Path(re.search(r"python (\S+/scripts/pretrain\.py) ", single).group(1))
    assert double == single.replace(
        f"python {script} ", f"torchrun --standalone --nnodes 1 --nproc_per_node 2 {script} "
    )
    assert "torchrun" not in single


def test_contrastive_runs_torchrun_on_two_gpus_and_finetune_refuses_them(tmp_path: Path):
    contrastive = REPO / "tests" / "configs" / "contrastive.yaml"
    gpus = {"gpu": 2, "mem_mb": 1000, "runtime": 10, "cpus": 1}
    two = override(tmp_path, "two", {"contrastive": {"resources": gpus}})
    target = "results/tiny/pretrain/simsiam_resnet18_s0/encoder.safetensors"
    out = snakemake(tmp_path, target, "-n", "-p", configs=(TINY_CONFIG, contrastive, two)).stdout
    (command,) = shell_commands(out, "contrastive_pretrain")
    assert "torchrun --standalone --nnodes 1 --nproc_per_node 2 " in command and "contrastive_pretrain.py" in command
    refused = override(tmp_path, "refused", {"finetune": {"resources": gpus}})
    result = snakemake(tmp_path, "-n", configs=(TINY_CONFIG, refused), check=False)
    assert result.returncode != 0 and "finetune.resources.gpu is 2" in result.stdout + result.stderr


def test_commands_and_inputs_use_workflow_paths_relative_to_the_workdir(tmp_path: Path):
    out = snakemake(tmp_path, "-n", "-p").stdout
    for rule in ("download", "prepare", "split", "pretrain", "finetune", "tables", "report"):
        for command in shell_commands(out, rule):
            script = re.search(r"(?:python|nproc_per_node \d+) (\S+\.py) ", command).group(1)
            assert not Path(script).is_absolute(), command
            # Pasted into a shell in the working directory, the command finds the workflow's own script.
            assert (tmp_path / script).resolve() == REPO / "scripts" / Path(script).name, command
    inputs = [line for line in out.splitlines() if line.strip().startswith("input:")]
    assert inputs and not [line for line in inputs if re.search(r"(^|[ ,])/", line.split(":", 1)[1])], inputs[:3]


def test_every_job_declares_memory_and_time(tmp_path: Path):
    out = snakemake(tmp_path, "-n").stdout
    resources = job_resources(out)
    assert {
        "download",
        "prepare",
        "split",
        "label_subset",
        "patch_validity",
        "pretrain",
        "finetune",
        "tables",
        "figures",
        "pretrain_figures",
        "report",
    } <= set(resources)
    for rule, lines in resources.items():
        if rule == "all":  # runs nothing
            continue
        for line in lines:
            assert re.search(r"\bmem_mb=\d+", line) and re.search(r"\bruntime=\d+", line), (rule, line)


def test_a_retried_job_asks_for_more_memory_and_time(tmp_path: Path):
    missing = tmp_path / "no_such_manifest.csv"
    bad = override(
        tmp_path,
        "bad",
        {
            "dataset": {"name": "bad", "kind": "manifest", "source": str(missing)},
            "resources": {"default": {"mem_mb": 1000, "runtime": 7}, "download": {"mem_mb": 1500, "runtime": 11}},
        },
    )
    result = snakemake(
        tmp_path, "results/bad/download/source.json", "--retries", "1", configs=(TINY_CONFIG, bad), check=False
    )
    assert result.returncode != 0
    lines = job_resources(result.stdout + result.stderr)["download"]
    assert any("mem_mb=1500" in line and "runtime=11" in line for line in lines), lines
    assert any("mem_mb=3000" in line and "runtime=22" in line for line in lines), lines


def test_sub_second_stages_are_local(tmp_path: Path):
    # Dry runs print every job as a plain `rule` outside a cluster, so ask the parsed workflow.
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    configs = [REPO / "workflow_config.yaml", TINY_CONFIG]
    with SnakemakeApi(OutputSettings()) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            snakefile=REPO / "Snakefile",
            config_settings=ConfigSettings(configfiles=configs),
            workdir=tmp_path,
        )._workflow
        local = set(workflow._localrules)
    assert {"all", "split", "label_subset", "tables", "report"} <= local
    assert not {"download", "prepare", "pretrain", "finetune", "figures", "pretrain_figures"} & local


def test_modes_and_presets_add_runs_beside_the_default_ones(tmp_path: Path):
    """Default (full, current) runs keep today's folders; every other pair gets a `_<mode>-<preset>` folder."""
    variants = override(
        tmp_path, "variants", {"finetune": {"modes": ["full", "probe"], "augment_presets": ["current", "randaugment"]}}
    )
    target = "results/tiny/finetune/scratch_resnet18"
    runs = {
        f"{target}/frac0.1_seed0{suffix}/metrics.json"
        for suffix in ("", "_full-randaugment", "_probe-current", "_probe-randaugment")
    }
    out = snakemake(tmp_path, *sorted(runs), "-n", "-p", configs=(TINY_CONFIG, variants)).stdout
    commands = shell_commands(out, "finetune")
    assert len(commands) == 4
    by_folder = {re.search(r"--out (\S+)", c).group(1).rsplit("/", 1)[-1]: c for c in commands}
    assert "--mode" not in by_folder["frac0.1_seed0"] and "--budget frac0.1" in by_folder["frac0.1_seed0"]
    assert "--mode probe --augment randaugment" in by_folder["frac0.1_seed0_probe-randaugment"]
    assert all("--task multiclass" in c for c in commands)


def test_seeds_by_budget_adds_subset_seeds_at_that_budget_only(tmp_path: Path):
    """label_fractions.seeds_by_budget: seeds 0 and 3 at 10% labels, `seeds` ([0]) at 100%, for every init."""
    more = override(tmp_path, "seeds", {"label_fractions": {"seeds_by_budget": {"frac0.1": [0, 3]}}})
    out = snakemake(tmp_path, "-n", "-p", configs=(TINY_CONFIG, more)).stdout
    option = lambda command, name: re.search(rf"--{name} (\S+)", command).group(1)  # noqa: E731
    planned = {(option(c, "init"), option(c, "budget"), option(c, "seed")) for c in shell_commands(out, "finetune")}
    inits = {init for init, _, _ in planned}
    assert inits >= {"scratch_vit-tiny", "scratch_resnet18", "rgmim_r0.75_vit-tiny_s0"}
    for init in inits:  # the masking-ratio study's extra ratios (rgmim_r0.5...) run at 100% labels only
        low = {s for i, b, s in planned if i == init and b == "frac0.1"}
        assert low == ({"0", "3"} if "_r0.5_" not in init else set()), init
        assert {s for i, b, s in planned if i == init and b == "frac1"} == {"0"}
