#!/usr/bin/env python
"""Run a whole DAG from scratch and print its wall time, time per stage and its lowest-budget results.

Runs in runs/<name>/ (default `bench_default`, a fresh folder: an existing one is never overwritten), so its
results/ (one folder per dataset, and the experiment's) are the run's alone:
    python benchmarks/default_run.py --cores 2
    python benchmarks/default_run.py --cores 2 --name bench_study --configfile workflow_config.yaml \
        configs/mae_vs_resnet.yaml
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--name", default="bench_default", help="the run's folder, runs/<name>/")
    parser.add_argument(
        "--configfile",
        type=Path,
        nargs="+",
        default=[REPO / "workflow_config.yaml"],
        help="config files in merge order, as snakemake --configfile takes them",
    )
    return parser.parse_args(argv)


def stage_times(benchmarks: Path) -> pd.DataFrame:
    """Wall and CPU seconds per rule, summed over that rule's jobs (of every dataset under `benchmarks`, a
    results/ folder), from Snakemake's benchmark files."""
    rows = []
    for folder in sorted(benchmarks.glob("*/benchmarks")):
        for tsv in sorted(folder.rglob("*.tsv")):
            stage = tsv.relative_to(folder).parts[0].removesuffix(".tsv")
            record = pd.read_csv(tsv, sep="\t").iloc[0]
            rows.append({"stage": stage, "wall_s": float(record["s"]), "cpu_s": float(record["cpu_time"])})
    table = (
        pd.DataFrame(rows)
        .groupby("stage")
        .agg(jobs=("wall_s", "size"), wall_s=("wall_s", "sum"), cpu_s=("cpu_s", "sum"))
    )
    return table.sort_values("wall_s", ascending=False)


def lowest_fraction(tables: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Test accuracy (segmentation: Dice) per method at the lowest label fraction (mean over seeds) and its
    significance rows."""
    runs = pd.read_csv(tables / "label_fractions.csv")
    lowest = runs["fraction"].min()
    metric = "test_dice" if "test_dice" in runs else "test_accuracy"
    accuracy = (
        runs[runs["fraction"] == lowest]
        .groupby(["method", "architecture"])[metric]
        .agg(["mean", "count"])
        .sort_values("mean", ascending=False)
    )
    significance = pd.read_csv(tables / "significance.csv")
    columns = ["comparison", "difference", "ci_low", "ci_high", "p_value"]
    return accuracy, significance.loc[significance["fraction"] == lowest, columns]


def print_results(tables: Path) -> None:
    """The lowest label fraction's accuracies and significance, or the study table where budgets are counts."""
    if (tables / "label_fractions.csv").exists() and not pd.read_csv(tables / "label_fractions.csv").empty:
        accuracy, significance = lowest_fraction(tables)
        print("\ntest accuracy (segmentation: Dice) at the lowest label fraction:")
        print(accuracy.round(3).to_string())
        print(significance.round(3).to_string(index=False))
    for name in ("study.md", "transfer.md"):
        if (tables / name).exists():
            print("\n" + (tables / name).read_text())


def main(argv: list[str] | None = None) -> int:
    """Run, time and summarise."""
    args = parse_args(argv)
    workdir = REPO / "runs" / args.name
    if workdir.exists():
        sys.exit(f"{workdir} exists; remove it or pass another --name (the benchmark needs a fresh run)")
    workdir.mkdir(parents=True)
    configs = [str(Path(c).resolve()) for c in args.configfile]
    command = ["snakemake", "--cores", str(args.cores), "--snakefile", str(REPO / "Snakefile"), "--directory",
               str(workdir), "--quiet", "rules", "--configfile", *configs]  # fmt: skip
    start = time.perf_counter()
    completed = subprocess.run(command, cwd=workdir, check=False)
    wall = time.perf_counter() - start
    if completed.returncode != 0:
        print(f"snakemake failed (exit {completed.returncode}) after {wall:.0f} s", file=sys.stderr)
        return completed.returncode
    results = workdir / "results"
    stages = stage_times(results)
    print(
        f"whole DAG: {wall:.0f} s wall on {args.cores} cores, {int(stages['jobs'].sum())} jobs, "
        f"{stages['cpu_s'].sum():.0f} CPU s"
    )
    print(stages.round(1).to_string())
    for tables in sorted(results.glob("*/tables")):
        print(f"\n== {tables.parent.name}")
        print_results(tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
