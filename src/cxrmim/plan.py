"""Which jobs a config asks for, and the cross-checks that refuse a config before any job runs.

Torch-free on purpose: `rules/common.smk` builds one `Plan` while Snakemake builds the DAG, and the rules ask it for
datasets, run names, fine-tuning runs, budgets and variants; `rules/common.smk` itself keeps paths and input
functions. Every method and init kind comes from `cxrmim.registry`, every dataset from `cxrmim.experiment`.
Pretraining runs live under their corpus (results/<corpus>/pretrain/<run>), fine-tuning runs under each
evaluation dataset (results/<dataset>/finetune/...).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from cxrmim import registry
from cxrmim.checks import (
    check_contrastive,
    check_dataset_options,
    check_inits,
    check_methods,
    check_reports,
    encoder_key,
)
from cxrmim.config import check_consistency, validate_config
from cxrmim.data.splits import budget_tag, configured_budgets
from cxrmim.experiment import Experiment, check_experiment
from cxrmim.inits import parse_init, pretrain_run_name
from cxrmim.recipe import check_recipes

DEFAULT_VARIANT = ("full", "current")  # (mode, augmentation preset) of run folders without a suffix


def variant_suffix(mode: str, preset: str) -> str:
    """Run-folder suffix of a (fine-tuning mode, augmentation preset) pair: none for the default pair."""
    return "" if (mode, preset) == DEFAULT_VARIANT else f"_{mode}-{preset}"


def variant_pattern() -> str:
    """Wildcard pattern of every variant suffix (or none), from the registry's modes and presets."""
    modes, presets = registry.names(registry.FINETUNE_MODES), registry.names(registry.AUGMENT_PRESETS)
    return rf"(_({'|'.join(modes)})-({'|'.join(presets)}))?"


def parse_variant(variant: str) -> tuple[str, str] | None:
    """(mode, preset) of a run folder's `_<mode>-<preset>` suffix; None for the default pair."""
    if not variant:
        return None
    mode, preset = variant[1:].split("-")
    return mode, preset


def run_outputs(methods: tuple[str, ...], run_folder: str) -> dict[str, str]:
    """Output name -> path pattern of the rule that trains `methods`, from their registry `output_files`.

    One rule trains several methods and a rule's outputs cannot vary with its method wildcard, so its methods must
    declare the same files.
    """
    declared = {tuple(registry.method(m).output_files.items()) for m in methods}
    if len(declared) != 1:
        raise ValueError(f"methods {list(methods)} share one pretraining rule but declare different output files")
    return {name: f"{run_folder}/{file}" for name, file in declared.pop()}


class Plan:
    """The jobs of one config: pretraining runs, fine-tuning inits and runs, label budgets, variants."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.experiment = Experiment(config)

    # --- datasets ----------------------------------------------------------------------------------------------
    @cached_property
    def datasets(self) -> dict[str, dict[str, Any]]:
        """Every dataset some job reads -> its view (the whole config with that dataset's sections)."""
        return {name: self.experiment.view(name) for name in self.experiment.used}

    def view(self, dataset: str) -> dict[str, Any]:
        """The config one dataset's stages read."""
        return self.datasets[dataset]

    @property
    def evaluated(self) -> list[str]:
        """The evaluation datasets."""
        return self.experiment.evaluated

    @property
    def corpora(self) -> list[str]:
        """The datasets pretrainings train on."""
        return self.experiment.corpora

    def corpus_of(self, run: str) -> str:
        """The dataset a pretraining run (a concrete init name) trained on."""
        return self.experiment.corpus(parse_init(run).kind)

    def methods_on(self, corpus: str) -> list[str]:
        """The configured pretraining methods that train on `corpus`."""
        configured = [*self.config["pretrain"]["methods"], *self.contrastive_methods]
        return [m for m in configured if self.experiment.corpus(m) == corpus]

    def runs_on(self, corpus: str, runs: list[str]) -> list[str]:
        """The runs among `runs` that train on `corpus`."""
        return [r for r in runs if self.corpus_of(r) == corpus]

    # --- pretraining -------------------------------------------------------------------------------------------
    @property
    def pretrain_seeds(self) -> list[int]:
        """pretrain.seeds."""
        return [int(s) for s in self.config["pretrain"]["seeds"]]

    @property
    def contrastive(self) -> dict[str, Any]:
        """The optional `contrastive` section; without it (or with no methods) it adds no jobs."""
        return self.config.get("contrastive") or {}

    @property
    def contrastive_methods(self) -> list[str]:
        """contrastive.methods, in config order."""
        return list(self.contrastive.get("methods") or [])

    def run_names(self, method: str, ratio: float, encoder: str | None = None) -> list[str]:
        """Folder names of one (method, ratio, encoder) pretraining, one per pretraining seed."""
        encoder = encoder or self.config["pretrain"]["encoder"]
        return [pretrain_run_name(method, ratio, encoder, seed) for seed in self.pretrain_seeds]

    def contrastive_run_names(self, method: str) -> list[str]:
        """Folder names of one joint-embedding method's runs: one per (contrastive encoder, pretraining seed)."""
        encoders = self.contrastive.get("encoders") or []
        return [pretrain_run_name(method, None, e, seed) for e in encoders for seed in self.pretrain_seeds]

    def init_names(self, init: str) -> list[str]:
        """Concrete inits of a `finetune.inits` entry: a method's runs (main ratio), or the entry itself."""
        if init not in registry.BY_NAME:
            return [init]
        if not registry.method(init).has_mask_ratio:
            return self.contrastive_run_names(init)
        return self.run_names(init, self.config["pretrain"]["mask_ratio"])

    def encoder_of(self, init: str) -> str:
        """The `encoders` key a concrete init uses: its name's, or its config entry's `encoder` (external inits)."""
        return encoder_key(self.config, parse_init(init))

    @cached_property
    def main_inits(self) -> list[str]:
        """Every concrete fine-tuning init of finetune.inits."""
        return [name for init in self.config["finetune"]["inits"] for name in self.init_names(init)]

    @cached_property
    def ratio_runs(self) -> list[str]:
        """The masking-ratio study: every method with a ratio at each of mask_ratios and the main ratio."""
        pretrain = self.config["pretrain"]
        ratios = sorted(set(pretrain.get("mask_ratios", [])) | {pretrain["mask_ratio"]})
        masked = [m for m in pretrain["methods"] if registry.method(m).has_mask_ratio]
        return [name for m in masked for r in ratios for name in self.run_names(m, r)]

    @cached_property
    def pretrain_runs(self) -> list[str]:
        """Every masked / report-aware pretraining run (the `pretrain` rule), sorted."""
        specs = [parse_init(i) for i in self.main_inits]
        mains = {s.name for s in specs if s.pretrained and registry.method(s.kind).has_mask_ratio}
        return sorted(set(self.ratio_runs) | mains)

    @cached_property
    def contrastive_runs(self) -> list[str]:
        """Every joint-embedding pretraining run (the `contrastive_pretrain` rule), in config order."""
        return [name for m in self.contrastive_methods for name in self.contrastive_run_names(m)]

    def method_settings(self, method: str, drop: tuple[str, ...] = ()) -> dict[str, Any]:
        """A method's settings: its own `contrastive.<method>` block, or the `pretrain:` section without `drop`
        and without the other methods' subsections (so tuning MRM never reruns MedIM)."""
        if registry.method(method).family == registry.JOINT:
            return self.contrastive[method]
        own = registry.own_sections("pretrain")
        mine = own.get(method)
        drop = (*drop, *(s for s in set(own.values()) if s != mine))
        return {k: v for k, v in self.config["pretrain"].items() if k not in drop}

    def report_figure_runs(self, corpus: str) -> dict[str, str]:
        """Report figure -> the run it shows: the first configured method naming it (main ratio, first seed)."""
        configured = [m for m in self.config["pretrain"]["methods"] if self.experiment.corpus(m) == corpus]
        runs = {}
        for figure in dict.fromkeys(m.figure for m in registry.METHODS if m.figure):  # in registry order
            named = [m for m in configured if registry.method(m).figure == figure]
            if named:
                runs[figure] = self.run_names(named[0], self.config["pretrain"]["mask_ratio"])[0]
        return runs

    # --- fine-tuning -------------------------------------------------------------------------------------------
    def budgets(self, dataset: str) -> list[str]:
        """Every label budget of a dataset as its path tag: frac<fraction>, n<count>."""
        return configured_budgets(self.view(dataset)["label_fractions"])

    def budget_seeds(self, dataset: str, budget: str) -> list[int]:
        """The label-subset seeds of one budget: label_fractions.seeds, or that budget's seeds_by_budget entry."""
        fractions = self.view(dataset)["label_fractions"]
        return [int(s) for s in (fractions.get("seeds_by_budget") or {}).get(budget, fractions["seeds"])]

    @property
    def variants(self) -> list[str]:
        """Run-folder suffix of each configured (mode, augmentation preset) pair."""
        finetune = self.config["finetune"]
        modes, presets = finetune.get("modes", ["full"]), finetune.get("augment_presets", ["current"])
        return [variant_suffix(m, p) for m in modes for p in presets]

    def first_variant(self) -> tuple[str, str]:
        """The (mode, preset) the paper's figures draw: the first configured of each."""
        finetune = self.config["finetune"]
        return finetune.get("modes", ["full"])[0], finetune.get("augment_presets", ["current"])[0]

    def finetune_runs(self, dataset: str) -> list[str]:
        """Every fine-tuning run of one evaluation dataset as `finetune/<init>/<budget>_seed<seed><variant>`: main
        inits at every budget, each masking ratio at 100% labels (or every budget), each once per variant.

        A pretrained init exists once per pretraining seed, so its runs cross pretraining seeds with subset seeds.
        """
        budgets, seeds = self.budgets(dataset), lambda b: self.budget_seeds(dataset, b)
        runs = {(i, b, s) for i in self.main_inits for b in budgets for s in seeds(b)}
        every = self.config["finetune"].get("ratios_at_every_budget")
        ratio_budgets = budgets if every else [budget_tag(fraction=1)]
        runs |= {(r, b, s) for r in self.ratio_runs for b in ratio_budgets for s in seeds(b)}
        return [f"finetune/{i}/{b}_seed{s}{v}" for i, b, s in sorted(runs) for v in self.variants]


def check(config: dict[str, Any]) -> None:
    """Refuse, with the fix, a config whose jobs cannot be built (the schema checks each value on its own)."""
    check_experiment(config)  # names that resolve: corpus, evaluated datasets, the experiment's own folder
    check_methods(config)
    check_inits(config)  # so every report-reading init is a configured pretraining method (checked per corpus)
    check_contrastive(config)
    check_recipes(config["finetune"])  # recipes list configured inits, each init in one recipe at most
    plan = Plan(config)
    for name, view in plan.datasets.items():
        if plan.experiment.single:
            check_consistency(view)  # patch size vs image size, budget spellings
        else:  # each entry merged over `dataset` is checked as a one-dataset config's sections are
            validate_config(view, f"datasets.{name} (merged over `dataset`)")
        check_dataset_options(view)
    for corpus in plan.corpora:
        check_reports(
            {**plan.view(corpus), "pretrain": {"methods": plan.methods_on(corpus)}, "finetune": {"inits": []}}
        )
