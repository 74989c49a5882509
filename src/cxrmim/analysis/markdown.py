"""Markdown cells shared by the tables: pipe tables and run counts."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd


def markdown_table(table: pd.DataFrame) -> str:
    """GitHub-flavoured Markdown table of a DataFrame's cells as strings."""
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(str(cell) for cell in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def count_text(counts: Iterable[int]) -> str:
    """'4' when every cell has 4 runs, '2–4' when they differ."""
    counts = sorted({int(c) for c in counts})
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
