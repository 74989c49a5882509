"""The experiment's one self-contained HTML page: the cross-dataset summary (table and figure) first, then one
section per evaluation dataset (task, headline metric, its verdict and headline figure, a link to its own report),
saying which dataset was the pretraining corpus and which were evaluated in-domain or transferred."""

from __future__ import annotations

import html
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from cxrmim.analysis.report import figure_html, markdown_html, page_html, verdict_html
from cxrmim.io import atomic_path

LOG = logging.getLogger("cxrmim.experiment_report")
IN_DOMAIN, TRANSFERRED = "in-domain", "transferred"


@dataclass(frozen=True)
class DatasetFiles:
    """One evaluation dataset's outputs the page shows or links."""

    name: str
    verdict_md: Path
    headline_png: Path
    report_html: Path


def role(name: str, corpus: str) -> str:
    """'in-domain' for the pretraining corpus itself, else 'transferred'."""
    return IN_DOMAIN if name == corpus else TRANSFERRED


def dataset_tasks(transfer_csv: Path) -> dict[str, tuple[str, str]]:
    """Dataset -> (task, headline metric label) from tables/transfer.csv."""
    table = pd.read_csv(transfer_csv)
    missing = {"dataset", "task", "metric_label"} - set(table.columns)
    if missing:
        raise ValueError(f"{transfer_csv}: no {sorted(missing)} columns; write it with scripts/transfer.py")
    first = table.drop_duplicates("dataset")
    return {row.dataset: (row.task, row.metric_label) for row in first.itertuples(index=False)}


def relative_link(target: Path, page: Path) -> str:
    """The href of `target` from a page written at `page` (both relative to one working directory or absolute)."""
    return Path(os.path.relpath(Path(target).resolve(), Path(page).resolve().parent)).as_posix()


def corpus_html(corpus: str, datasets: list[DatasetFiles], experiment: dict) -> str:
    """Which dataset every pretraining used and how each evaluation dataset relates to it."""
    roles = ", ".join(f"{html.escape(d.name)} ({role(d.name, corpus)})" for d in datasets)
    text = f"<p>Pretraining corpus: <strong>{html.escape(corpus)}</strong>"
    contrastive = experiment.get("contrastive_corpus")
    if contrastive and contrastive != corpus:
        text += f" (the joint-embedding methods: <strong>{html.escape(str(contrastive))}</strong>)"
    text += f". Evaluated on: {roles}.</p>"
    if corpus not in {d.name for d in datasets}:
        text += "<p>The corpus itself is not among the evaluation datasets: every result below is a transfer.</p>"
    return text


def dataset_html(
    files: DatasetFiles, corpus: str, tasks: dict[str, tuple[str, str]], out: Path, captions: Path | None
) -> str:
    """One dataset's section: name, its relation to the corpus, task and metric, verdict, headline figure, link."""
    if files.name not in tasks:
        raise ValueError(
            f"dataset {files.name!r} is not in the cross-dataset summary (tables/transfer.csv has "
            f"{sorted(tasks)}); pass its runs to scripts/transfer.py too"
        )
    task, metric = tasks[files.name]
    kind = role(files.name, corpus)
    where = "the pretraining corpus itself" if kind == IN_DOMAIN else f"transferred from {corpus}"
    anchor = html.escape(f"dataset-{files.name}")
    link = html.escape(relative_link(files.report_html, out))
    return "\n".join(
        [
            f'<section class="dataset {kind}" id="{anchor}">',
            f"<h2>{html.escape(files.name)} ({kind})</h2>",
            f"<p>{html.escape(f'{where.capitalize()}. Task: {task}; headline metric: {metric}.')} "
            f'Full results: <a href="{link}">{html.escape(files.name)} report</a>.</p>',
            verdict_html(files.verdict_md, figure_html(files.headline_png, captions), shift=1),
            "</section>",
        ]
    )


def build_experiment_report(
    transfer_csv: str | Path,
    transfer_md: str | Path,
    transfer_png: str | Path,
    datasets: list[DatasetFiles],
    corpus: str,
    experiment: dict,
    out: str | Path,
    captions_dir: str | Path | None = None,
    title: str | None = None,
) -> str:
    """The whole page as a string; `out` is where it will be written (the links to the dataset reports are
    relative to it), `experiment` the config's experiment section."""
    if not datasets:
        raise ValueError("no evaluation datasets given; pass --dataset NAME VERDICT_MD HEADLINE_PNG REPORT_HTML")
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise ValueError(f"evaluation datasets given more than once: {names}")
    if experiment.get("corpus") and experiment["corpus"] != corpus:
        raise ValueError(f"--corpus {corpus} but the experiment config's corpus is {experiment['corpus']}")
    evaluate = experiment.get("evaluate")
    if evaluate and set(evaluate) - set(names):
        LOG.warning("experiment.evaluate lists %s, which have no section here", sorted(set(evaluate) - set(names)))
    captions = Path(captions_dir) if captions_dir else None
    tasks = dataset_tasks(Path(transfer_csv))
    title = title or f"cxrmim experiment: {experiment.get('name') or 'across datasets'}"
    contents = "".join(
        f'<li><a href="#{html.escape(f"dataset-{n}")}">{html.escape(n)}</a> ({role(n, corpus)})</li>' for n in names
    )
    body = [
        f"<h1>{html.escape(title)}</h1>",
        '<section class="summary" id="summary"><h2>Across datasets</h2>',
        corpus_html(corpus, datasets, experiment),
        markdown_html(Path(transfer_md).read_text(), shift=1),
        figure_html(Path(transfer_png), captions),
        f"<p>One section per evaluation dataset follows:</p><ul>{contents}</ul></section>",
        *(dataset_html(d, corpus, tasks, Path(out), captions) for d in datasets),
        "<h2>Experiment configuration</h2>",
        f"<pre>{html.escape(yaml.safe_dump(experiment, sort_keys=False))}</pre>",
    ]
    return page_html(title, body)


def write_experiment_report(out: str | Path, **kwargs) -> Path:
    """Write the page atomically."""
    out = Path(out)
    page = build_experiment_report(out=out, **kwargs)
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out
