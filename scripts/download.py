#!/usr/bin/env python
"""Generate the phantom dataset, or fetch/extract/locate a real one (the `download` rule)."""

import argparse
from pathlib import Path

from cxrmim.cli import parse_json_arg, run_main, setup_logging
from cxrmim.data.acquire import acquire


def main() -> None:
    """Parse arguments and run the stage."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True, help="the `dataset` config section (JSON or .json file)")
    parser.add_argument("--raw-dir", required=True, type=Path, help="where downloads/extractions go")
    parser.add_argument("--marker", required=True, type=Path, help="JSON file recording where the raw data is")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log")
    args = parser.parse_args()
    setup_logging(args.log)
    acquire(parse_json_arg(args.dataset), args.raw_dir, args.marker, args.workers)


if __name__ == "__main__":
    run_main(main)
