"""The `tokenizer` stage: train WordPiece on the training split's reports, or adopt the user's tokenizer file."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from cxrmim.cli import parse_json_arg, setup_logging
from cxrmim.text.reports import load_reports
from cxrmim.text.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

log = logging.getLogger("cxrmim.tokenizer")

TRAIN_PART = "train"  # validation and test reports never shape the vocabulary


def training_reports(reports_jsonl: str | Path, split_csv: str | Path) -> list[str]:
    """The cleaned reports of the training part, in index order."""
    records = {r["index"]: r for r in load_reports(reports_jsonl)}
    split = pd.read_csv(split_csv, keep_default_na=False)
    indices = sorted(int(i) for i in split.loc[split["part"] == TRAIN_PART, "index"])
    missing = [i for i in indices if i not in records]
    if missing:
        raise ValueError(f"{reports_jsonl} lacks {len(missing)} training image(s) of {split_csv}; re-run prepare")
    return [records[i]["report"] for i in indices]


def build_tokenizer(
    reports_jsonl: str | Path, split_csv: str | Path, settings: dict[str, Any], out: str | Path
) -> dict:
    """Write the tokenizer file `out`: trained here, or the configured `text.tokenizer` checked and copied."""
    given = settings.get("tokenizer")
    if given:
        tokenizer = load_tokenizer(given)
        log.info("using the configured tokenizer %s (vocabulary %d)", given, tokenizer.get_vocab_size())
    else:
        texts = training_reports(reports_jsonl, split_csv)
        n_text = sum(bool(t.strip()) for t in texts)
        tokenizer = train_tokenizer(texts, int(settings.get("vocab_size", 1000)), int(settings.get("min_frequency", 1)))
        log.info("trained WordPiece on %d training reports (%d non-empty): vocabulary %d", len(texts), n_text,
                 tokenizer.get_vocab_size())  # fmt: skip
    save_tokenizer(tokenizer, out)
    return {"vocab_size": tokenizer.get_vocab_size(), "source": str(given) if given else "trained"}


def main(argv: list[str] | None = None) -> int:
    """Entry point of scripts/tokenizer.py."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reports", required=True, help="prepared/reports.jsonl")
    parser.add_argument("--split", required=True, help="split.csv; only the train part's reports are used")
    parser.add_argument("--settings", required=True, help="JSON (inline or file) of the `text:` config section")
    parser.add_argument("--out", required=True, help="tokenizer JSON to write")
    parser.add_argument("--log", default=None)
    args = parser.parse_args(argv)
    setup_logging(args.log)
    build_tokenizer(args.reports, args.split, parse_json_arg(args.settings), args.out)
    return 0
