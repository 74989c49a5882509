"""Clean radiology reports and split them into sentences; stored next to the prepared cache as reports.jsonl."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from cxrmim.io import write_text_atomic

REPORTS_FILE = "reports.jsonl"
# De-identification placeholders: MIMIC-CXR's `___`, older MIMIC's `[** ... **]`, OpenI's `XXXX`.
DEID_PATTERN = re.compile(r"_{2,}|\[\*\*.*?\*\*\]|\bX{2,}\b")
SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


def clean_report(text: Any) -> str:
    """Drop de-identification placeholders and collapse whitespace (missing reports become '')."""
    if text is None or (isinstance(text, float) and math.isnan(text)):  # pandas reads an empty cell as NaN
        return ""
    text = DEID_PATTERN.sub(" ", str(text))
    text = re.sub(r"\s+([.,;:!?])", r"\1", re.sub(r"\s+", " ", text))
    return text.strip()


def split_sentences(text: str) -> list[str]:
    """Sentences of a cleaned report (split after . ! ? ;), empty pieces dropped."""
    return [s.strip() for s in SENTENCE_END.split(text) if s.strip(" .;!?")]


def report_records(manifest: pd.DataFrame) -> list[dict[str, Any]]:
    """One record per manifest row: index, id, cleaned report and its sentences."""
    reports = manifest["report"] if "report" in manifest else pd.Series([""] * len(manifest))
    records = []
    for index, image_id, raw in zip(manifest["index"], manifest["id"], reports):
        sentences = split_sentences(clean_report(raw))
        records.append(
            {"index": int(index), "id": str(image_id), "report": " ".join(sentences), "sentences": sentences}
        )
    return records


def write_reports(out_dir: str | Path, manifest: pd.DataFrame) -> Path:
    """Write prepared/reports.jsonl (one JSON record per image, in manifest order), atomically."""
    path = Path(out_dir) / REPORTS_FILE
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in report_records(manifest)))
    return path


def load_reports(path: str | Path) -> list[dict[str, Any]]:
    """Read reports.jsonl back; a clear error names the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no reports file; re-run the prepare rule")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not a JSON record ({error}); re-run the prepare rule") from error
        records.append(record)
    return records
