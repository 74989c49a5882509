#!/usr/bin/env python
"""CLI: draw the fine-tuning figures (PNG) from the runs' metrics.json, history.csv and predictions.csv, the
verdict's headline figure and comparisons heatmap from the tables rule's CSVs, and the worst test predictions of
segmentation runs (worst_segmentations.png; a figure saying why it is empty for classification)."""

from __future__ import annotations

import argparse
import logging

from cxrmim.analysis.figures import write_figures
from cxrmim.analysis.segmentation_figures import DEFAULT_K, write_segmentation_figures
from cxrmim.analysis.verdict_figures import write_verdict_figures
from cxrmim.cli import parse_json_arg, run_main, setup_logging


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--metrics", nargs="+", required=True, help="metrics.json of every fine-tuning run")
    parser.add_argument(
        "--settings",
        "--plots",
        dest="settings",
        default="{}",
        help="JSON (inline or file) of the plots: section (dpi, style)",
    )
    parser.add_argument(
        "--mask-ratio",
        type=float,
        default=None,
        help="pretrain.mask_ratio: other ratios stay out of the fraction plots (default: inferred)",
    )
    parser.add_argument(
        "--variant",
        nargs=2,
        default=["full", "current"],
        metavar=("MODE", "PRESET"),
        help="fine-tuning mode and augmentation preset whose runs are drawn (the first configured)",
    )
    parser.add_argument("--intervals", default=None, help="tables/accuracy_intervals.csv (the headline figure)")
    parser.add_argument("--significance", default=None, help="tables/significance.csv (the comparisons heatmap)")
    parser.add_argument(
        "--prepared",
        default=None,
        help="the dataset's prepared folder (images.npy, masks.npy / lesion_masks.npy): needed for segmentation runs",
    )
    parser.add_argument(
        "--worst-k", type=int, default=DEFAULT_K, help="worst test predictions shown per init (segmentation)"
    )
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--log", default=None, help="also log to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Write all figures."""
    args = parse_args(argv)
    setup_logging(args.log)
    plots = parse_json_arg(args.settings)
    variant = tuple(args.variant)
    written = write_figures(args.metrics, plots, args.out_dir, args.mask_ratio, variant)
    written += write_verdict_figures(args.intervals, args.significance, plots, args.out_dir)
    written += write_segmentation_figures(
        args.metrics, plots, args.out_dir, args.prepared, args.mask_ratio, variant, args.worst_k
    )
    for path in written:
        logging.getLogger("cxrmim.figures").info("wrote %s", path)


if __name__ == "__main__":
    run_main(main)
