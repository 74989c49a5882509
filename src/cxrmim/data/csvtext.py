"""Manifest CSV files: text as Excel and others write it (UTF-8 with or without BOM, UTF-16; ',', ';', tab or
'|') and the header's columns (spelling-insensitive, aliases, repeats refused)."""

from __future__ import annotations

import codecs
import csv
import io
from pathlib import Path

from cxrmim.data.tasks import fold

__all__ = ["SourceError", "column_positions", "manifest_columns", "read_manifest_table"]

MANIFEST_REQUIRED = ("image", "label")
MANIFEST_OPTIONAL = ("mask", "patient_id", "view", "report")
# Common alternative column names (a header holding one and the canonical name is refused: which is meant?).
MANIFEST_ALIASES = {
    "finding": "label",
    "path": "image",
    "filename": "image",
    "mask_path": "mask",
    "patientid": "patient_id",
    "patient": "patient_id",
    "viewposition": "view",
    "view_position": "view",
}

FIELD_LIMIT = 1 << 30  # bytes per cell; csv's default (128 KiB) is shorter than some reports


class SourceError(ValueError):
    """A dataset source whose layout or manifest cannot be used; the message says how to fix it."""


def _decode(csv_path: Path, raw: bytes) -> str:
    """The manifest's text: UTF-8 (with or without BOM) or UTF-16 (Excel's 'Unicode Text'), else a fix."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    elif b"\x00" in raw[:4096]:  # UTF-16 without a BOM: every other byte of ASCII text is zero
        encoding = "utf-16-le" if raw[1:4096:2].count(0) > raw[0:4096:2].count(0) else "utf-16-be"
    else:
        encoding = "utf-8-sig"  # utf-8-sig: Excel writes a BOM
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        if encoding != "utf-8-sig":
            raise SourceError(
                f"{csv_path}: looks like {encoding} text but does not decode (offset {err.start}); "
                "save the manifest as 'CSV UTF-8' (Excel) or UTF-8 text"
            ) from None
        raise SourceError(
            f"{csv_path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); save the manifest "
            f"as UTF-8 (e.g. `iconv -f latin1 -t utf-8 {csv_path.name} > fixed.csv`, or 'CSV UTF-8' in Excel)"
        ) from None


def _delimiter(header_line: str) -> str:
    """The header's delimiter: ',' when it has one, else ';', tab or '|' (European Excel, 'Text (Tab delimited)')."""
    if "," in header_line:
        return ","
    counts = {d: header_line.count(d) for d in (";", "\t", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def read_manifest_table(csv_path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, cells) rows of a manifest, whatever its encoding and delimiter."""
    text = _decode(csv_path, Path(csv_path).read_bytes())
    lines = text.splitlines(keepends=True)
    delimiter = _delimiter(lines[0] if lines else "")
    csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT))  # long free-text reports are legitimate
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [name.strip() for name in next(reader, [])]
        rows = [(reader.line_num, row) for row in reader if row]  # csv gives [] for a blank line
    except csv.Error as err:
        raise SourceError(
            f"{csv_path}: line {reader.line_num}: cannot parse the CSV ({err}); check the quoting "
            'of that line (an unclosed " makes the rest of the file one cell)'
        ) from None
    return header, rows


def _canonical(key: str) -> str | None:
    """The manifest column a folded header name fills ('patient_id', 'PatientID' -> patient_id), or None."""
    if key in MANIFEST_REQUIRED + MANIFEST_OPTIONAL:
        return key
    return MANIFEST_ALIASES.get(key) or MANIFEST_ALIASES.get(key.replace("_", ""))


def column_positions(csv_path: Path, header: list[str]) -> dict[str, int]:
    """Positions of the canonical columns in the header (spelling-insensitive, with aliases); repeats are errors."""
    keys = [fold(name).replace(" ", "_") for name in header]
    by_key: dict[str, list[int]] = {}
    for position, key in enumerate(keys):
        if key:
            by_key.setdefault(key, []).append(position)
    for key, positions in by_key.items():
        if len(positions) > 1 and _canonical(key):  # a repeated unused column changes nothing (and is reported)
            names = " and ".join(f"{header[i]!r} (column {i + 1})" for i in positions)
            raise SourceError(
                f"{csv_path}: the header repeats a column: {names}; keep one of them (which one "
                "is meant cannot be guessed) or rename the other"
            )
    columns: dict[str, int] = {}
    for key in MANIFEST_REQUIRED + MANIFEST_OPTIONAL:
        spellings = [k for k in by_key if _canonical(k) == key]
        if len(spellings) > 1:
            names = ", ".join(repr(header[by_key[k][0]]) for k in spellings)
            raise SourceError(f"{csv_path}: columns {names} all name the {key}; keep one of them or rename the others")
        if spellings:
            columns[key] = by_key[spellings[0]][0]
    absent = [key for key in MANIFEST_REQUIRED if key not in columns]
    if absent:
        raise SourceError(
            f"{csv_path}: missing required column {', '.join(absent)} (found: {', '.join(header) or 'no header'}); "
            "the manifest needs columns image,label (optional mask,patient_id,view,report)"
        )
    return columns


def manifest_columns(csv_path: Path) -> dict[str, str]:
    """What became of each header column of a manifest: the canonical column it fills, or 'ignored'."""
    header, _ = read_manifest_table(csv_path)
    used = {position: key for key, position in column_positions(csv_path, header).items()}
    return {name: used.get(i, "ignored (not a manifest column)") for i, name in enumerate(header)}
