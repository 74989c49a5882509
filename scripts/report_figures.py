#!/usr/bin/env python
"""Figures of the report-aware methods: MRM reconstructions and MedIM's report-guided masks (`report_figures` rule)."""

import argparse

from cxrmim.analysis.report_figures import make_report_figures
from cxrmim.cli import parse_json_arg, run_main, setup_logging


def main() -> None:
    """Parse arguments and draw the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", required=True, help="prepared cache directory (images.npy, reports.jsonl)")
    parser.add_argument("--split", required=True, help="split.csv; test images are shown")
    parser.add_argument("--validity", required=True, help="validity.npz of the patch_validity stage")
    parser.add_argument("--tokenizer", required=True, help="the tokenizer rule's tokenizer.json")
    parser.add_argument("--runs", nargs="+", required=True, help="pretraining run folders: one MRM-family, one MedIM")
    parser.add_argument("--text", required=True, help="JSON of the `text:` config section")
    parser.add_argument("--settings", required=True, help="JSON of the `plots:` config section")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--log", default=None)
    args = parser.parse_args()
    setup_logging(args.log)
    make_report_figures(args.prepared, args.split, args.validity, args.tokenizer, args.runs,
                        parse_json_arg(args.text), args.out_dir, parse_json_arg(args.settings))  # fmt: skip


if __name__ == "__main__":
    run_main(main)
