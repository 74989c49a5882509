#!/usr/bin/env python
"""Predict, clean and quality-check a lung mask for every prepared image (the `lung_masks` rule)."""

import argparse
from pathlib import Path

from cxrmim.cli import parse_json_arg, run_main, setup_logging
from cxrmim.segment.predict import run_lung_masks


def main() -> None:
    """Parse arguments and run the stage."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", required=True, type=Path, help="prepared cache folder")
    parser.add_argument("--weights", required=True, type=Path, help="segmenter .safetensors (or a state-dict .pt)")
    parser.add_argument("--settings", required=True, help="the `lung_masks` config section (JSON)")
    parser.add_argument("--out-dir", required=True, type=Path, help="writes masks.npy, qc.csv and summary.json")
    parser.add_argument("--figure", required=True, type=Path, help="QC figure: predicted outlines, worst first")
    parser.add_argument("--log")
    args = parser.parse_args()
    setup_logging(args.log)
    run_lung_masks(args.prepared, args.weights, parse_json_arg(args.settings), args.out_dir, args.figure)


if __name__ == "__main__":
    run_main(main)
