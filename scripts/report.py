#!/usr/bin/env python
"""CLI: write results/<dataset>/report.html, one self-contained page: the verdict (tables/verdict.md with the
headline figure), the data and provenance, then tables, figures and config."""

from __future__ import annotations

import argparse
from pathlib import Path

from cxrmim.analysis.report import ordered_tables, write_report
from cxrmim.analysis.summary import RunFiles
from cxrmim.cli import run_main, setup_logging
from cxrmim.config import REPO_ROOT

CAPTIONS = Path(__file__).resolve().parents[1] / "docs" / "captions"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tables", nargs="*", default=[], help="Markdown tables (*.md) in page order")
    parser.add_argument("--tables-dir", default=None, help="or: every *.md in this folder, the verdict first")
    parser.add_argument("--figures", nargs="*", default=[], help="PNG figures in page order (pretraining ones too)")
    parser.add_argument("--config", required=True, help="the config used: YAML/JSON file or inline JSON")
    parser.add_argument("--captions-dir", default=str(CAPTIONS), help="<figure name>.rst caption texts")
    parser.add_argument("--title", default="cxrmim results")
    summary = parser.add_argument_group("inputs of the opening summary (each optional)")
    summary.add_argument("--prepared-summary", type=Path, help="prepared/summary.json")
    summary.add_argument("--manifest", type=Path, help="prepared/manifest.csv")
    summary.add_argument("--split", type=Path, help="split/split.csv")
    summary.add_argument("--lung-masks-summary", type=Path, help="lung_masks/summary.json (predicted masks)")
    summary.add_argument("--validity-summary", type=Path, help="patch_validity/summary.csv")
    summary.add_argument("--metrics", nargs="*", type=Path, default=[], help="fine-tuning metrics.json (device)")
    summary.add_argument("--pretrain-histories", nargs="*", type=Path, default=[], help="pretrain/<run>/history.csv")
    summary.add_argument("--benchmarks-dir", type=Path, help="benchmarks/ folder (wall time per stage)")
    summary.add_argument(
        "--repo",
        type=Path,
        default=REPO_ROOT,
        help="git checkout of the workflow, for the commit (default: where cxrmim is installed from)",
    )
    parser.add_argument("--out", required=True, help="report.html")
    parser.add_argument("--log", default=None, help="also log to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Write the report."""
    args = parse_args(argv)
    setup_logging(args.log)
    tables = [*args.tables, *(ordered_tables(args.tables_dir) if args.tables_dir else [])]
    write_report(
        args.out,
        tables=tables,
        figures=args.figures,
        config_source=args.config,
        title=args.title,
        captions_dir=args.captions_dir,
        repo=args.repo,
        files=RunFiles(
            prepared_summary=args.prepared_summary,
            manifest=args.manifest,
            split=args.split,
            lung_masks_summary=args.lung_masks_summary,
            validity_summary=args.validity_summary,
            metrics=args.metrics,
            pretrain_histories=args.pretrain_histories,
            benchmarks_dir=args.benchmarks_dir,
        ),
    )


if __name__ == "__main__":
    run_main(main)
