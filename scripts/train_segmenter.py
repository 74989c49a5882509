#!/usr/bin/env python
"""Train the lung segmenter on the configured mask-bearing datasets and score it on a held-out part (the `train_segmenter` rule)."""

import argparse
from pathlib import Path

from cxrmim.cli import parse_json_arg, run_main, setup_logging
from cxrmim.segment.train import run_train_segmenter


def main() -> None:
    """Parse arguments and run the stage."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--settings", required=True, help="the `lung_masks` config section (JSON)")
    parser.add_argument("--weights", required=True, type=Path, help="output segmenter.safetensors")
    parser.add_argument("--quality", required=True, type=Path, help="output JSON with held-out Dice and IoU")
    parser.add_argument("--figure", required=True, type=Path, help="output PNG of held-out masks, worst first")
    parser.add_argument("--log")
    args = parser.parse_args()
    setup_logging(args.log)
    run_train_segmenter(parse_json_arg(args.settings), args.weights, args.quality, args.figure)


if __name__ == "__main__":
    run_main(main)
