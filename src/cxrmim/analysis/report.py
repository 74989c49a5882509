"""One self-contained HTML page: the Markdown tables, every figure embedded as base64 PNG, and the config."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import yaml

from cxrmim.analysis.runs import load_config

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f2f2f2; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; }
figcaption { font-size: 0.9em; color: #555; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
"""


TABLE_ORDER = ["label_fractions", "significance", "study", "mask_ratio", "hyperparameters"]  # results first, setup last


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
    cells = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>"


def markdown_html(text: str) -> str:
    """The Markdown subset the tables module writes: headings, pipe tables and paragraphs."""
    parts: list[str] = []
    table: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.lstrip().startswith("|"):
            table.append(line)
            continue
        if table:
            parts.append(table_html(table))
            table = []
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 6)  # '#' -> h2 under the page's h1
            parts.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            parts.append(f"<p>{html.escape(line.strip())}</p>")
    return "\n".join(parts)


def caption_text(captions_dir: Path | None, name: str) -> str:
    """The figure's RST caption as plain text (markup characters are harmless here), else its name."""
    if captions_dir is not None and (captions_dir / f"{name}.rst").exists():
        return " ".join((captions_dir / f"{name}.rst").read_text().split())
    return name.replace("_", " ")


def figure_html(path: Path, captions_dir: Path | None) -> str:
    """A PNG embedded as a data URI with its caption."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = html.escape(caption_text(captions_dir, path.stem))
    return f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}"><figcaption>{caption}</figcaption></figure>'


def config_yaml(config_source: str | Path) -> str:
    """The config exactly as given when it is a file, else the inline JSON re-written as YAML."""
    path = Path(str(config_source))
    if not str(config_source).lstrip().startswith("{") and path.exists():
        return path.read_text()
    return yaml.safe_dump(load_config(config_source), sort_keys=False)


def build_report(
    tables: list[str | Path], figures: list[str | Path], config_source: str | Path, title: str,
    captions_dir: str | Path | None = None,
) -> str:
    """The whole page as a string."""
    captions = Path(captions_dir) if captions_dir else None
    body = [f"<h1>{html.escape(title)}</h1>", "<h2>Tables</h2>"]
    body += [f"<section>{markdown_html(Path(path).read_text())}</section>" for path in tables]
    body.append("<h2>Figures</h2>")
    body += [figure_html(Path(path), captions) for path in figures]
    body += ["<h2>Configuration</h2>", f"<pre>{html.escape(config_yaml(config_source))}</pre>"]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_report(out: str | Path, **kwargs) -> Path:
    """Write the page atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(build_report(**kwargs), encoding="utf-8")
    tmp.replace(out)
    return out
