#!/usr/bin/env python
"""Stratified, patient-grouped train/val/test split of the prepared cache (the `split` rule)."""

import argparse
import logging
from pathlib import Path

import pandas as pd

from cxrmim.cli import parse_json_arg, run_main, setup_logging
from cxrmim.data.splits import split_dataset


def main() -> None:
    """Parse arguments and run the stage."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", required=True, type=Path, help="prepared/manifest.csv")
    parser.add_argument("--settings", required=True, help="the `split` config section (JSON)")
    parser.add_argument("--out", required=True, type=Path, help="split.csv to write")
    parser.add_argument("--log")
    args = parser.parse_args()
    setup_logging(args.log)
    settings = parse_json_arg(args.settings)
    manifest = pd.read_csv(args.manifest, keep_default_na=False)
    split = split_dataset(
        manifest,
        settings["test_fraction"],
        settings["val_fraction"],
        settings["seed"],
        use_official=bool(settings.get("use_official", False)),
        val_count=settings.get("val_count"),  # absent in older configs: val_fraction
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    split.to_csv(args.out, index=False)
    counts = split.groupby(["part", "label"]).size().unstack(fill_value=0)
    logging.getLogger("cxrmim.split").info("images per part and label:\n%s", counts.to_string())


if __name__ == "__main__":
    run_main(main)
