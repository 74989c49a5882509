#!/usr/bin/env python
"""CLI: write the label-fraction, masking-ratio, hyperparameter, significance and per-budget study tables."""

from __future__ import annotations

import argparse
import logging

from cxrmim.analysis.study import write_study
from cxrmim.analysis.tables import write_tables
from cxrmim.cli import parse_json_arg, run_main, setup_logging
from cxrmim.config import (
    read_config_source as load_config,  # one config loader: file or inline JSON
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--metrics", nargs="+", required=True, help="metrics.json of every fine-tuning run")
    parser.add_argument(
        "--config",
        required=True,
        help="the config used (for Table 1 and pretrain.mask_ratio): YAML/JSON file or inline JSON",
    )
    parser.add_argument(
        "--settings",
        default=None,
        help="JSON of the tables: section (bootstrap_samples, seed); default: the config's own",
    )
    parser.add_argument(
        "--pretrain-histories",
        nargs="*",
        default=[],
        help="history.csv of every pretraining run (Table 3: fallback and visible-lung shares)",
    )
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--log", default=None, help="also log to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Write all tables."""
    args = parse_args(argv)
    setup_logging(args.log)
    config = load_config(args.config)
    settings = parse_json_arg(args.settings) if args.settings else config.get("tables", {})
    written = write_tables(args.metrics, config, args.out_dir, settings, args.pretrain_histories)
    written["study"] = write_study(args.metrics, args.out_dir, settings)
    for name, path in written.items():
        logging.getLogger("cxrmim.tables").info("%s: %s", name, path)


if __name__ == "__main__":
    run_main(main)
