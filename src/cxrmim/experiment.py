"""The datasets of one config: a pretraining corpus and the evaluation datasets, each a merged `dataset` view.

Torch-free (the Snakefile builds it while it builds the DAG). A config is one of two shapes:
- one dataset: `dataset.name` is set; that dataset is the corpus and the only evaluation dataset, exactly as
  before datasets had names (results/<name>/ holds everything);
- an experiment: `datasets` names several datasets (each merged recursively over the `dataset` section, which then
  holds shared defaults and no name) and `experiment` says which one every pretraining uses (`corpus`, optionally
  `contrastive_corpus` for the joint-embedding family) and which are evaluated (`evaluate`).
Every stage reads `view(name)`: the whole config with that dataset's `dataset`, `split`, `label_fractions` and
`lung_masks` sections, so the stages' code never needs to know there are several.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from cxrmim import registry
from cxrmim.config import merge

# Sections a `datasets` entry may give its own version of (merged over the top-level section).
PER_DATASET_SECTIONS = ("split", "label_fractions", "lung_masks")
# Keys of the whole config that choose datasets; a dataset's view leaves them out, so adding an evaluation
# dataset changes no other dataset's stage parameters.
EXPERIMENT_KEYS = ("datasets", "experiment")


class Experiment:
    """Dataset name -> its view, the corpus of each pretraining family, the evaluation datasets."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    @property
    def single(self) -> bool:
        """True for a one-dataset config (`dataset.name` set)."""
        return bool(self.config["dataset"].get("name"))

    @property
    def section(self) -> dict[str, Any]:
        """The `experiment` section ({} for a one-dataset config)."""
        return {} if self.single else (self.config.get("experiment") or {})

    @property
    def name(self) -> str:
        """The experiment's name: results/<name>/ holds its cross-dataset outputs (one dataset: the dataset's)."""
        return self.config["dataset"]["name"] if self.single else self.section["name"]

    @cached_property
    def entries(self) -> dict[str, dict[str, Any]]:
        """Dataset name -> its config entry as written (one dataset: the `dataset` section)."""
        if self.single:
            return {self.config["dataset"]["name"]: {}}
        return dict(self.config.get("datasets") or {})

    def view(self, name: str) -> dict[str, Any]:
        """The whole config as one dataset's stages see it: its merged `dataset` and per-dataset sections."""
        if name not in self.entries:
            raise KeyError(f"no dataset {name!r} (known: {sorted(self.entries)})")
        entry = self.entries[name] or {}
        view = {k: v for k, v in self.config.items() if k not in EXPERIMENT_KEYS}
        own = {k: v for k, v in entry.items() if k not in PER_DATASET_SECTIONS}
        view["dataset"] = {**merge(self.config["dataset"], own), "name": name}
        for key in PER_DATASET_SECTIONS:
            if key in entry:
                view[key] = merge(self.config[key], entry[key])
        return view

    def corpus(self, method: str) -> str:
        """The dataset a pretraining method trains on: `contrastive_corpus` for the joint-embedding family (when
        set), else `corpus`."""
        if self.single:
            return self.name
        joint = registry.method(method).family == registry.JOINT
        return (joint and self.section.get("contrastive_corpus")) or self.section["corpus"]

    @property
    def corpora(self) -> list[str]:
        """Every dataset some pretraining trains on, in config order."""
        if self.single:
            return [self.name]
        named = [self.section.get("corpus"), self.section.get("contrastive_corpus")]
        return list(dict.fromkeys(n for n in named if n))

    @property
    def evaluated(self) -> list[str]:
        """The evaluation datasets, in config order."""
        return [self.name] if self.single else list(self.section.get("evaluate") or [])

    @property
    def used(self) -> list[str]:
        """Every dataset some job reads (corpora first), so unused `datasets` entries cost nothing."""
        return list(dict.fromkeys([*self.corpora, *self.evaluated]))


def check_experiment(config: dict[str, Any]) -> None:
    """Refuse, with the fix, an experiment whose names do not resolve (the schema checks each value alone)."""
    experiment = Experiment(config)
    if experiment.single:
        return
    section, names = experiment.section, sorted(experiment.entries)
    if not names:
        raise ValueError(
            "dataset.name is null (the multi-dataset shape) but `datasets` is empty; name the dataset "
            "(dataset.name) for a one-dataset run, or list datasets under `datasets`"
        )
    for key in ("name", "corpus", "evaluate"):
        if not section.get(key):
            raise ValueError(
                f"experiment.{key} is not set; a config with `datasets` (and no dataset.name) needs "
                "experiment.name, experiment.corpus and experiment.evaluate"
            )
    for key in ("corpus", "contrastive_corpus"):
        if section.get(key) and section[key] not in experiment.entries:
            raise ValueError(f"experiment.{key} is {section[key]!r}, not a `datasets` entry (known: {names})")
    unknown = [n for n in section["evaluate"] if n not in experiment.entries]
    if unknown:
        raise ValueError(f"experiment.evaluate lists {unknown}, not `datasets` entries (known: {names})")
    if section["name"] in experiment.entries:
        raise ValueError(
            f"experiment.name {section['name']!r} is also a dataset's name; both would write results/"
            f"{section['name']}/: rename the experiment"
        )
