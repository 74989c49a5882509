"""Knowledge words (MedIM's MeSH words): a curated chest radiology vocabulary matched on whole words and phrases.

The reference implementation looks each whitespace token up in a set, so multi-word terms such as
"pleural effusion" never match; here every term, single or multi-word, is one regular-expression alternative
matched on word boundaries, longest first, so a phrase wins over its own words.

A term in a negated phrase ("No pleural effusion or pneumothorax.", "Heart size is normal.") describes what the
image does not show; with `skip_negated` it is not a knowledge word: NegEx-style cues (Chapman et al. 2001), trimmed to
chest radiograph reports, before the term (at most NEGATION_WINDOW words away) or after it, within its clause and
not past a termination word ("but", "however"). The reference implementation has no negation handling, and it is
off by default: at CPU size it made KWM mask fewer lesion patches (docs/methods.md, "MedIM").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_KEYWORDS = Path(__file__).with_name("chest_keywords.txt")

PRE_NEGATION = ("no", "not", "without", "negative for", "free of", "absence of", "no evidence of", "resolution of",
                "resolved", "removed", "ruled out")  # fmt: skip
POST_NEGATION = ("is normal", "are normal", "is clear", "are clear", "is unremarkable", "are unremarkable",
                 "within normal limits", "has resolved", "have resolved", "is not seen", "are not seen")  # fmt: skip
PSEUDO_NEGATION = (
    "no change",
    "no interval change",
    "no significant change",
    "without change",
    "without interval change",
    "no increase",
    "not only",
)  # a cue word that negates no finding
TERMINATION = ("but", "however", "although", "though", "yet", "except", "apart from", "aside from", "which")
NEGATION_WINDOW = 6  # words between a cue and the term (NegEx uses 5 tokens; lists such as "A, B or C" need 6)
POST_NEGATION_WINDOW = 3  # words between the term and a following cue ("effusion has resolved", "lungs are clear")


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


_PRE, _POST, _PSEUDO = map(keyword_pattern, (PRE_NEGATION, POST_NEGATION, PSEUDO_NEGATION))
_TERMINATION = keyword_pattern(TERMINATION)
_CLAUSE_END = re.compile(r"[.;:!?\n]")


def keyword_spans(text: str, pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    """Character spans (start, end) of the knowledge terms in `text`, left to right, non-overlapping."""
    return [match.span() for match in pattern.finditer(text)]


def is_negated(text: str, start: int, end: int) -> bool:
    """Whether the term at text[start:end] lies in the scope of a negation cue of its clause."""
    clause_start = max((m.end() for m in _CLAUSE_END.finditer(text, 0, start)), default=0)
    following_end = _CLAUSE_END.search(text, end)
    clause_end = following_end.start() if following_end else len(text)
    before, after = _PSEUDO.sub(lambda m: "_" * len(m.group()), text[clause_start:start]), text[end:clause_end]
    cues = list(_PRE.finditer(before))
    if cues:
        gap = before[cues[-1].end() :]
        if not _TERMINATION.search(gap) and len(gap.split()) <= NEGATION_WINDOW:
            return True
    cue = _POST.search(after)
    gap = after[: cue.start()] if cue else ""
    return bool(cue) and not _TERMINATION.search(gap) and len(gap.split()) <= POST_NEGATION_WINDOW


@dataclass(frozen=True)
class KnowledgeWords:
    """The knowledge terms, and whether terms in a negated phrase are left out (`skip_negated`)."""

    pattern: re.Pattern[str]
    skip_negated: bool = False

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the knowledge terms in `text` (negated ones left out when `skip_negated`)."""
        spans = keyword_spans(text, self.pattern)
        return [(a, b) for a, b in spans if not (self.skip_negated and is_negated(text, a, b))]


def knowledge_words(text: dict[str, Any]) -> KnowledgeWords:
    """The knowledge words a config's `text` section names (keyword file, extra terms, negation)."""
    terms = read_keywords(text.get("keywords"), text.get("extra_keywords") or ())
    return KnowledgeWords(keyword_pattern(terms), bool(text.get("skip_negated", False)))
