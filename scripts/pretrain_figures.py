#!/usr/bin/env python
"""Pretraining figures: masking illustration (paper Fig. 1), reconstructions and loss curves of all runs."""

import argparse
from pathlib import Path

from cxrmim.cli import parse_json_arg, run_main, setup_logging


def main() -> None:
    """Parse arguments and draw the three figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", required=True, type=Path, help="prepared cache folder")
    parser.add_argument("--split", required=True, type=Path, help="split.csv (test images are illustrated)")
    parser.add_argument("--validity", required=True, type=Path, help="validity.npz")
    parser.add_argument("--runs", required=True, nargs="+", type=Path, help="pretrain run folders")
    parser.add_argument("--mask-ratio", required=True, type=float, help="ratio of the masking illustration")
    parser.add_argument("--out-dir", required=True, type=Path, help="folder for the PNG files")
    parser.add_argument("--settings", required=True, help="the `plots` config section (JSON): dpi, style, n_examples")
    parser.add_argument("--log")
    args = parser.parse_args()
    setup_logging(args.log)
    # Imported after parsing so --help stays fast (matplotlib, torch, timm).
    from cxrmim.analysis.pretrain_figures import make_pretrain_figures

    make_pretrain_figures(
        args.prepared,
        args.split,
        args.validity,
        args.runs,
        args.mask_ratio,
        args.out_dir,
        parse_json_arg(args.settings),
    )


if __name__ == "__main__":
    run_main(main)
