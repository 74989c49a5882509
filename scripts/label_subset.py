#!/usr/bin/env python
"""Write the labelled training subset for one (label budget, seed) (the `label_subset` rule)."""

import argparse
import logging
from pathlib import Path

import pandas as pd

from cxrmim.cli import run_main, setup_logging
from cxrmim.data.splits import label_subset, parse_budget


def main() -> None:
    """Parse arguments and run the stage."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--split", required=True, type=Path, help="split.csv")
    parser.add_argument("--budget", required=True, help="frac<fraction> (e.g. frac0.01) or n<count> (e.g. n1000)")
    parser.add_argument("--seed", required=True, type=int, help="label-fraction seed")
    parser.add_argument("--split-seed", required=True, type=int, help="split.seed from the config")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--log")
    args = parser.parse_args()
    setup_logging(args.log)
    parse_budget(args.budget)  # a malformed tag fails before the split is read
    subset = label_subset(pd.read_csv(args.split, keep_default_na=False), args.budget, args.seed, args.split_seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    subset.to_csv(args.out, index=False)
    logging.getLogger("cxrmim.subset").info(
        "%d labelled images: %s", len(subset), subset["label"].value_counts().sort_index().to_dict()
    )


if __name__ == "__main__":
    run_main(main)
