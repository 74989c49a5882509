"""One self-contained HTML page: the verdict first (headline figure, generated sentences, a table per label budget),
then the data and provenance, the Markdown tables (every pairwise comparison as a heatmap, its table folded),
every figure embedded as base64 PNG, and the config."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd
import yaml

from cxrmim.analysis.summary import (
    RunFiles,
    dataset_sentences,
    images_per_class_and_split,
    pretraining_sentences,
    provenance,
    wall_times,
)
from cxrmim.config import REPO_ROOT
from cxrmim.config import (
    read_config_source as load_config,  # one config loader: file or inline JSON
)
from cxrmim.io import atomic_path

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f2f2f2; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; }
figcaption { font-size: 0.9em; color: #555; }
.summary { background: #f6f8fb; border-left: 4px solid #4a78b5; padding: 0.2em 1em 0.5em; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
.verdict { border-left: 4px solid #2a7a3a; padding: 0.2em 1em 0.5em; }
td.better { font-weight: bold; color: #1a5e2a; }
td.worse { font-weight: bold; color: #8a1c1c; }
td.unclear { font-style: italic; color: #555; }
details { margin: 0.5em 0 1.5em; }
summary { cursor: pointer; font-weight: bold; }
"""


TABLE_ORDER = ["verdict", "label_fractions", "significance", "study", "mask_ratio", "hyperparameters"]  # results first
VERDICT, HEADLINE, HEATMAP = (
    "verdict",
    "accuracy_by_budget",
    "significance_heatmap",
)  # placed with the verdict / comparisons
# The verdict table's words get a style too; the words themselves carry the meaning (print, colour blindness).
VERDICT_CLASSES = {"better": "better", "worse": "worse", "cannot tell at this size": "unclear"}


def ordered_tables(tables_dir: str | Path) -> list[Path]:
    """Every Markdown table in a folder: the known ones in TABLE_ORDER, any others after them by name."""
    paths = sorted(Path(tables_dir).glob("*.md"))
    rank = {name: i for i, name in enumerate(TABLE_ORDER)}
    return sorted(paths, key=lambda p: (rank.get(p.stem, len(rank)), p.stem))


def table_html(lines: list[str]) -> str:
    """A Markdown pipe table (header, rule, rows) as an HTML table."""
    rows = [[html.escape(cell.strip()) for cell in line.strip().strip("|").split("|")] for line in lines]
    header, body = rows[0], rows[2:]  # rows[1] is the |---| rule
    head = "".join(f"<th>{cell}</th>" for cell in header)
    cells = "".join("<tr>" + "".join(cell_html(cell) for cell in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>"


def cell_html(cell: str) -> str:
    """A table cell, styled when it is a verdict word."""
    style = VERDICT_CLASSES.get(cell)
    return f'<td class="{style}">{cell}</td>' if style else f"<td>{cell}</td>"


def markdown_html(text: str, before_tables: str = "", fold: str | None = None, shift: int = 0) -> str:
    """The Markdown subset the tables module writes: headings, pipe tables and paragraphs; `before_tables` goes
    in front of the first table, with `fold` every table is folded under that summary line, and `shift` moves
    every heading that many levels down (a page nested in another's section)."""
    parts: list[str] = []
    table: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.lstrip().startswith("|"):
            table.append(line)
            continue
        if table:
            if before_tables:
                parts.append(before_tables)
                before_tables = ""
            rows = f" ({len(table) - 2} rows)"
            parts.append(
                f"<details><summary>{html.escape(fold)}{rows}</summary>{table_html(table)}</details>"
                if fold
                else table_html(table)
            )
            table = []
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1 + shift, 6)  # '#' -> h2 under the page's h1
            parts.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            parts.append(f"<p>{html.escape(line.strip())}</p>")
    return "\n".join(parts)


def frame_html(frame: pd.DataFrame) -> str:
    """A DataFrame as an HTML table, every cell escaped."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>"


def paragraphs(sentences: list[str], empty: str) -> str:
    """Sentences as paragraphs, or one saying what is missing."""
    return "".join(f"<p>{html.escape(s)}</p>" for s in sentences) or f"<p><em>{html.escape(empty)}</em></p>"


def verdict_html(verdict_md: Path | None, headline: str, shift: int = 0) -> str:
    """The first screen: the verdict's heading and sentences, the headline figure, then a table per budget
    (headings `shift` levels down, as in markdown_html)."""
    if verdict_md is None:
        h = f"h{2 + shift}"
        return f'<section class="verdict"><{h}>Verdict</{h}><p><em>no verdict table given</em></p>{headline}</section>'
    text = verdict_md.read_text()
    intro, _, budgets = text.partition("\n## ")
    rest = markdown_html("## " + budgets, shift=shift) if budgets else ""
    return f'<section class="verdict">{markdown_html(intro, shift=shift)}\n{headline}\n{rest}</section>'


def summary_html(files: RunFiles, config: dict, repo: Path) -> str:
    """After the verdict: dataset, pretraining masking and provenance."""
    parts = [
        '<section class="summary"><h2>The run: data and provenance</h2>',
        "<h3>Dataset</h3>",
        paragraphs(dataset_sentences(files), "no dataset summary given"),
    ]
    if files.split:
        parts.append(frame_html(images_per_class_and_split(files.split)))
    masking = pretraining_sentences(files.pretrain_histories)
    if masking:
        parts += ["<h3>Pretraining masking</h3>", paragraphs(masking, "")]
    rows = pd.DataFrame(provenance(files, config, repo), columns=["Record", "Value"])
    parts += ["<h3>Provenance</h3>", frame_html(rows)]
    times = wall_times(files.benchmarks_dir)
    if not times.empty:
        parts += [
            "<p>Wall time per stage (Snakemake benchmarks; jobs may have run in parallel):</p>",
            frame_html(times),
        ]
    return "\n".join(parts) + "</section>"


CONFIG_REFERENCE = re.compile(r"\{\{\s*snakemake\.config((?:\[[\"'][^\"']+[\"']\])+)\s*\}\}")


def fill_config(text: str, config: dict) -> str:
    """Replace the captions' Jinja references {{ snakemake.config["a"]["b"] }} with the config's value."""

    def value(match: re.Match) -> str:
        found: object = config
        for key in re.findall(r"[\"']([^\"']+)[\"']", match.group(1)):
            found = found.get(key, "?") if isinstance(found, dict) else "?"
        return str(found)

    return CONFIG_REFERENCE.sub(value, text)


def caption_text(captions_dir: Path | None, name: str, config: dict | None = None) -> str:
    """The figure's RST caption as plain text (markup characters are harmless here), else its name."""
    if captions_dir is not None and (captions_dir / f"{name}.rst").exists():
        return fill_config(" ".join((captions_dir / f"{name}.rst").read_text().split()), config or {})
    return name.replace("_", " ")


def figure_html(path: Path, captions_dir: Path | None, config: dict | None = None) -> str:
    """A PNG embedded as a data URI with its caption."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = html.escape(caption_text(captions_dir, path.stem, config))
    image = f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
    return f"<figure>{image}<figcaption>{caption}</figcaption></figure>"


def config_yaml(config_source: str | Path) -> str:
    """The config exactly as given when it is a file, else the inline JSON re-written as YAML."""
    path = Path(str(config_source))
    if not str(config_source).lstrip().startswith("{") and path.exists():
        return path.read_text()
    return yaml.safe_dump(load_config(config_source), sort_keys=False)


def build_report(
    tables: list[str | Path],
    figures: list[str | Path],
    config_source: str | Path,
    title: str,
    captions_dir: str | Path | None = None,
    files: RunFiles | None = None,
    repo: str | Path | None = None,
) -> str:
    """The whole page as a string; `files` feed the opening summary, `repo` is where the commit is read."""
    captions = Path(captions_dir) if captions_dir else None
    config = load_config(config_source)
    tables, figures = [Path(p) for p in tables], [Path(p) for p in figures]
    # The heatmap goes above the significance table it draws; without that table it stays among the figures.
    here = {HEADLINE} | ({HEATMAP} if any(p.stem == "significance" for p in tables) else set())
    placed = {p.stem: figure_html(p, captions, config) for p in figures if p.stem in here}
    verdict_md = next((p for p in tables if p.stem == VERDICT), None)
    body = [
        f"<h1>{html.escape(title)}</h1>",
        verdict_html(verdict_md, placed.get(HEADLINE, "")),
        summary_html(files or RunFiles(), config, Path(repo) if repo else REPO_ROOT),
        "<h2>Tables</h2>",
    ]
    for path in tables:
        if path.stem == VERDICT:
            continue
        folded = {"before_tables": placed.get(HEATMAP, ""), "fold": "Every pairwise comparison: show the table"}
        body.append(
            f"<section>{markdown_html(path.read_text(), **(folded if path.stem == 'significance' else {}))}</section>"
        )
    body.append("<h2>Figures</h2>")
    body += [figure_html(p, captions, config) for p in figures if p.stem not in placed]
    body += ["<h2>Configuration</h2>", f"<pre>{html.escape(config_yaml(config_source))}</pre>"]
    return page_html(title, body)


def page_html(title: str, body: list[str]) -> str:
    """A whole self-contained page: the title, the shared STYLE and the body parts in order."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_report(out: str | Path, **kwargs) -> Path:
    """Write the page atomically."""
    out = Path(out)
    page = build_report(**kwargs)
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out
