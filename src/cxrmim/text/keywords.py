"""Knowledge words (MedIM's MeSH words): a curated chest radiology vocabulary matched on whole words and phrases.

The reference implementation looks each whitespace token up in a set, so multi-word terms such as
"pleural effusion" never match; here every term, single or multi-word, is one regular-expression alternative
matched on word boundaries, longest first, so a phrase wins over its own words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

DEFAULT_KEYWORDS = Path(__file__).with_name("chest_keywords.txt")


def read_keywords(path: str | Path | None = None, extra: Iterable[str] = ()) -> list[str]:
    """Terms from a keyword file (default: the shipped list) plus `extra`, lower-cased, deduplicated, sorted."""
    path = Path(path) if path else DEFAULT_KEYWORDS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: keyword file not found; set text.keywords to a file of one term per line")
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    terms = {" ".join(t.lower().split()) for t in [*lines, *extra] if t.strip()}
    if not terms:
        raise ValueError(f"{path}: no keywords (one term per line, '#' comments)")
    return sorted(terms)


def keyword_pattern(terms: Iterable[str]) -> re.Pattern[str]:
    """One case-insensitive pattern: whole words, longest term first, space or hyphen between a term's words."""
    alternatives = []
    for term in sorted(set(terms), key=lambda t: (-len(t), t)):
        words = re.split(r"[\s-]+", term.strip())
        alternatives.append(r"[\s-]+".join(re.escape(w) for w in words if w))
    return re.compile(r"(?<![\w-])(?:" + "|".join(alternatives) + r")(?![\w-])", re.IGNORECASE)


def keyword_spans(text: str, pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    """Character spans (start, end) of the knowledge terms in `text`, left to right, non-overlapping."""
    return [match.span() for match in pattern.finditer(text)]
