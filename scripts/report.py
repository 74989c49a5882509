#!/usr/bin/env python
"""CLI: write results/<dataset>/report.html, a single self-contained page of tables, figures and config."""

from __future__ import annotations

import argparse
from pathlib import Path

from cxrmim.analysis.report import ordered_tables, write_report
from cxrmim.cli import run_main, setup_logging

CAPTIONS = Path(__file__).resolve().parents[1] / "docs" / "captions"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tables", nargs="*", default=[], help="Markdown tables (*.md) in page order")
    parser.add_argument("--tables-dir", default=None, help="or: every *.md in this folder, Table 2 first")
    parser.add_argument("--figures", nargs="*", default=[], help="PNG figures in page order (pretraining ones too)")
    parser.add_argument("--config", required=True, help="the config used: YAML/JSON file or inline JSON")
    parser.add_argument("--captions-dir", default=str(CAPTIONS), help="<figure name>.rst caption texts")
    parser.add_argument("--title", default="cxrmim results")
    parser.add_argument("--out", required=True, help="report.html")
    parser.add_argument("--log", default=None, help="also log to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Write the report."""
    args = parse_args(argv)
    setup_logging(args.log)
    tables = [*args.tables, *(ordered_tables(args.tables_dir) if args.tables_dir else [])]
    write_report(
        args.out, tables=tables, figures=args.figures, config_source=args.config, title=args.title,
        captions_dir=args.captions_dir,
    )


if __name__ == "__main__":
    run_main(main)
