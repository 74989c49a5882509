#!/usr/bin/env python
"""Joint-embedding (SimSiam / BYOL / SKD / Cross) pretraining figure: loss and embedding spread per epoch (the `contrastive_figures` rule)."""

import argparse
from pathlib import Path

from cxrmim.cli import parse_json_arg, run_main, setup_logging


def main() -> None:
    """Parse arguments and draw the figure."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--histories", required=True, nargs="+", type=Path, help="history.csv of each contrastive run")
    parser.add_argument("--settings", required=True, help="the `plots` config section (JSON): dpi, style")
    parser.add_argument("--out", required=True, type=Path, help="PNG file to write")
    parser.add_argument("--log")
    args = parser.parse_args()
    setup_logging(args.log)
    # Imported after parsing so --help stays fast (matplotlib).
    from cxrmim.analysis.contrastive_figures import plot_contrastive_pretraining

    plot_contrastive_pretraining(args.histories, args.out, parse_json_arg(args.settings))


if __name__ == "__main__":
    run_main(main)
