#!/usr/bin/env python
"""Normalise a dataset into the uint8 image/mask cache plus manifest (the `prepare` rule)."""

import argparse
import json
import logging
from pathlib import Path

from cxrmim.cli import parse_json_arg, run_main, setup_logging
from cxrmim.data.prepare import prepare


def main() -> None:
    """Parse arguments and run the stage."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--marker", required=True, type=Path, help="the download stage's JSON marker")
    parser.add_argument("--dataset", required=True, help="the `dataset` config section (JSON)")
    parser.add_argument("--settings", required=True, help="the `prepare` config section (JSON)")
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--log")
    args = parser.parse_args()
    setup_logging(args.log)
    summary = prepare(args.marker, parse_json_arg(args.dataset), parse_json_arg(args.settings), args.out_dir)
    logging.getLogger("cxrmim.prepare").info("summary: %s", json.dumps(summary))


if __name__ == "__main__":
    run_main(main)
