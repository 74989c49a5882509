#!/usr/bin/env python
"""CLI: write results/<experiment>/report.html, one self-contained page: the cross-dataset summary (transfer
table and figure, the pretraining corpus), then one section per evaluation dataset with its verdict, headline
figure and a link to its own report.html."""

from __future__ import annotations

import argparse
from pathlib import Path

from cxrmim.analysis.experiment_report import DatasetFiles, write_experiment_report
from cxrmim.cli import parse_json_arg, run_main, setup_logging

CAPTIONS = Path(__file__).resolve().parents[1] / "docs" / "captions"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transfer-csv", type=Path, required=True, help="tables/transfer.csv (task, metric)")
    parser.add_argument("--transfer-md", type=Path, required=True, help="tables/transfer.md (the summary table)")
    parser.add_argument("--transfer-png", type=Path, required=True, help="figures/transfer.png")
    parser.add_argument(
        "--dataset",
        nargs=4,
        action="append",
        required=True,
        metavar=("NAME", "VERDICT_MD", "HEADLINE_PNG", "REPORT_HTML"),
        help="an evaluation dataset: its name, tables/verdict.md, figures/accuracy_by_budget.png and report.html; "
        "once per dataset, in section order",
    )
    parser.add_argument("--corpus", default=None, help="the pretraining corpus (default: the config's corpus)")
    parser.add_argument(
        "--config", default="{}", help="JSON (inline or file) of the experiment: section (name, corpus, evaluate)"
    )
    parser.add_argument("--captions-dir", default=str(CAPTIONS), help="<figure name>.rst caption texts")
    parser.add_argument("--title", default=None, help="page title (default: from experiment.name)")
    parser.add_argument("--out", required=True, help="report.html")
    parser.add_argument("--log", default=None, help="also log to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Write the experiment report."""
    args = parse_args(argv)
    setup_logging(args.log)
    experiment = parse_json_arg(args.config)
    corpus = args.corpus or experiment.get("corpus")
    if not corpus:
        raise ValueError("no pretraining corpus: pass --corpus NAME or an experiment config with `corpus`")
    write_experiment_report(
        args.out,
        transfer_csv=args.transfer_csv,
        transfer_md=args.transfer_md,
        transfer_png=args.transfer_png,
        datasets=[DatasetFiles(name, Path(v), Path(p), Path(r)) for name, v, p, r in args.dataset],
        corpus=corpus,
        experiment=experiment,
        captions_dir=args.captions_dir,
        title=args.title,
    )


if __name__ == "__main__":
    run_main(main)
