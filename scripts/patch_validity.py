#!/usr/bin/env python
"""Lung coverage of every patch of every image, summary and figure (the `patch_validity` rule)."""

import argparse
from pathlib import Path

from cxrmim.cli import parse_json_arg, run_main, setup_logging
from cxrmim.data.validity import run_patch_validity
from cxrmim.segment.qc import provided_mask_report


def main() -> None:
    """Parse arguments and run the stage."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", required=True, type=Path, help="prepared cache folder")
    parser.add_argument("--settings", required=True, help="the `patch_validity` config section (JSON)")
    parser.add_argument("--out", required=True, type=Path, help="validity.npz")
    parser.add_argument("--summary", required=True, type=Path, help="summary CSV")
    parser.add_argument("--figure", required=True, type=Path, help="PNG with valid patches outlined")
    parser.add_argument("--masks", type=Path, help="lung masks replacing the prepared ones (lung_masks stage)")
    parser.add_argument("--mask-status", type=Path, help="the lung_masks stage's qc.csv (needed with --masks)")
    parser.add_argument("--mask-qc", help="lung_masks `qc` and `qc_policy` (JSON): check the provided masks too")
    parser.add_argument("--mask-qc-table", type=Path, help="per-image QC of the provided masks (CSV)")
    parser.add_argument("--mask-qc-figure", type=Path, help="the provided masks failing QC first (PNG)")
    parser.add_argument("--log")
    args = parser.parse_args()
    if (args.masks is None) != (args.mask_status is None):
        parser.error("--masks and --mask-status go together")
    setup_logging(args.log)
    mask_qc = parse_json_arg(args.mask_qc) if args.mask_qc else None
    run_patch_validity(
        args.prepared,
        parse_json_arg(args.settings),
        args.out,
        args.summary,
        args.figure,
        args.masks,
        args.mask_status,
        mask_qc,
    )
    if args.mask_qc_table is not None:
        provided_mask_report(args.prepared, mask_qc or {}, args.mask_qc_table, args.mask_qc_figure)


if __name__ == "__main__":
    run_main(main)
