#!/usr/bin/env python
"""CLI: the cross-dataset summary: a row per init, a column per evaluation dataset and label budget, each cell the
dataset's headline metric (mean ± std over runs); writes OUT_DIR/tables/transfer.csv, OUT_DIR/tables/transfer.md
and OUT_DIR/figures/transfer.png. Long path lists can come from a file: @FILE reads one argument per line."""

from __future__ import annotations

import argparse
import logging

from cxrmim.analysis.transfer import write_transfer
from cxrmim.cli import parse_json_arg, run_main, setup_logging


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__, fromfile_prefix_chars="@")
    parser.add_argument(
        "--dataset",
        nargs="+",
        action="append",
        required=True,
        metavar=("NAME", "METRICS_JSON"),
        help="an evaluation dataset's name, then the metrics.json of every fine-tuning run on it; once per dataset, "
        "in column order",
    )
    parser.add_argument(
        "--settings",
        "--plots",
        dest="settings",
        default="{}",
        help="JSON (inline or file) of the plots: section (dpi, style)",
    )
    parser.add_argument(
        "--variant",
        nargs=2,
        default=["full", "current"],
        metavar=("MODE", "PRESET"),
        help="fine-tuning mode and augmentation preset whose runs are summarised (the first configured)",
    )
    parser.add_argument(
        "--mask-ratio",
        type=float,
        default=None,
        help="pretrain.mask_ratio: other ratios (the ratio study) stay out (default: inferred per dataset)",
    )
    parser.add_argument("--out-dir", required=True, help="writes tables/transfer.{csv,md} and figures/transfer.png")
    parser.add_argument("--log", default=None, help="also log to this file")
    return parser.parse_args(argv)


def datasets_of(groups: list[list[str]]) -> dict[str, list[str]]:
    """{name: metrics.json paths} from the repeated --dataset NAME PATH... groups, checked."""
    datasets: dict[str, list[str]] = {}
    for name, *paths in groups:
        if name.endswith(".json") or "/" in name:
            raise ValueError(f"--dataset {name} ...: the first value is the dataset's name, then its metrics.json")
        if name in datasets:
            raise ValueError(f"--dataset {name} is given twice; pass each evaluation dataset once")
        if not paths:
            raise ValueError(f"--dataset {name}: no metrics.json given after the name")
        datasets[name] = paths
    return datasets


def main(argv: list[str] | None = None) -> None:
    """Write the summary table and figure."""
    args = parse_args(argv)
    setup_logging(args.log)
    written = write_transfer(
        datasets_of(args.dataset), parse_json_arg(args.settings), args.out_dir, tuple(args.variant), args.mask_ratio
    )
    for path in written.values():
        logging.getLogger("cxrmim.transfer").info("wrote %s", path)


if __name__ == "__main__":
    run_main(main)
