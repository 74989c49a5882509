"""Which jobs a config asks for, and the cross-checks that refuse a config before any job runs.

Torch-free on purpose: `rules/common.smk` builds one `Plan` while Snakemake builds the DAG, and the rules ask it for
run names, fine-tuning runs, budgets and variants; `rules/common.smk` itself keeps paths and input functions.
Every method and init kind comes from `cxrmim.registry`. Paths are relative to a dataset's results folder, so
a plan over several datasets (a pretraining corpus and evaluation datasets) adds a dataset dimension here.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from cxrmim import registry
from cxrmim.config import check_consistency
from cxrmim.data.splits import budget_tag, configured_budgets
from cxrmim.external_formats import resolve_external
from cxrmim.inits import InitSpec, parse_init, pretrain_run_name
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

    # --- datasets ----------------------------------------------------------------------------------------------
    @property
    def datasets(self) -> dict[str, dict[str, Any]]:
        """Dataset name -> its `dataset` section (one today: it is the corpus and the evaluation dataset)."""
        return {self.config["dataset"]["name"]: self.config["dataset"]}

    @property
    def results(self) -> str:
        """Results folder of the (one) dataset."""
        return f"results/{self.config['dataset']['name']}"

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

    def report_figure_runs(self) -> dict[str, str]:
        """Report figure -> the run it shows: the first configured method naming it (main ratio, first seed)."""
        configured = self.config["pretrain"]["methods"]
        runs = {}
        for figure in dict.fromkeys(m.figure for m in registry.METHODS if m.figure):  # in registry order
            named = [m for m in configured if registry.method(m).figure == figure]
            if named:
                runs[figure] = self.run_names(named[0], self.config["pretrain"]["mask_ratio"])[0]
        return runs

    # --- fine-tuning -------------------------------------------------------------------------------------------
    @property
    def budgets(self) -> list[str]:
        """Every label budget as its path tag: frac<fraction>, n<count>."""
        return configured_budgets(self.config["label_fractions"])

    def budget_seeds(self, budget: str) -> list[int]:
        """The label-subset seeds of one budget: label_fractions.seeds, or that budget's seeds_by_budget entry."""
        fractions = self.config["label_fractions"]
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

    def finetune_runs(self) -> list[str]:
        """Every fine-tuning run as `finetune/<init>/<budget>_seed<seed><variant>`: main inits at every budget,
        each masking ratio at 100% labels (or every budget), each once per variant.

        A pretrained init exists once per pretraining seed, so its runs cross pretraining seeds with subset seeds.
        """
        runs = {(i, b, s) for i in self.main_inits for b in self.budgets for s in self.budget_seeds(b)}
        every = self.config["finetune"].get("ratios_at_every_budget")
        ratio_budgets = self.budgets if every else [budget_tag(fraction=1)]
        runs |= {(r, b, s) for r in self.ratio_runs for b in ratio_budgets for s in self.budget_seeds(b)}
        return [f"finetune/{i}/{b}_seed{s}{v}" for i, b, s in sorted(runs) for v in self.variants]


def check(config: dict[str, Any]) -> None:
    """Refuse, with the fix, a config whose jobs cannot be built (the schema checks each value on its own)."""
    check_consistency(config)  # patch size vs image size, budget spellings
    check_methods(config)
    check_inits(config)
    check_contrastive(config)
    check_recipes(config["finetune"])  # recipes list configured inits, each init in one recipe at most
    check_dataset_options(config)
    check_reports(config)


def encoder_key(config: dict[str, Any], spec: InitSpec) -> str:
    """The `encoders` key of an init: the one in its name, or its `entries` entry's `encoder`."""
    return config[spec.entries][spec.entry]["encoder"] if spec.entries else spec.encoder_key


def check_dataset_options(config: dict[str, Any]) -> None:
    """No `dataset.<key>` that only other kinds read is set away from its default (it would be silently unused);
    a per-finding `dataset.uncertain` names only findings of the task."""
    from cxrmim.data.kinds import foreign_options
    from cxrmim.data.uncertain import check_uncertain

    dataset = config["dataset"]
    foreign = foreign_options(dataset)
    if foreign:
        readers = {k.name for k in registry.DATASET_KINDS for key, _ in k.options if key in foreign}
        raise ValueError(
            f"dataset.{', dataset.'.join(foreign)} set, but kind {dataset['kind']} does not read it "
            f"(only {', '.join(sorted(readers))}); remove it or fix dataset.kind"
        )
    check_uncertain(dataset)


def check_reports(config: dict[str, Any]) -> None:
    """Methods that learn from reports (and so the tokenizer) are asked for only on a dataset with reports."""
    from cxrmim.data.kinds import has_reports

    asked = [*config["pretrain"]["methods"], *config["finetune"]["inits"]]
    readers = [m for m in dict.fromkeys(asked) if m in registry.BY_NAME and registry.method(m).reads_reports]
    dataset = config["dataset"]
    if not readers or has_reports(dataset) is not False:
        return
    why = "its manifest has no report column" if dataset["kind"] == "manifest" else f"kind {dataset['kind']}"
    raise ValueError(
        f"{', '.join(readers)} learn from report text, but dataset {dataset['name']!r} has no reports ({why}); "
        f"drop {', '.join(readers)} from pretrain.methods and finetune.inits, or pretrain on a corpus with reports "
        "(mimic_cxr_jpg, a manifest with a report column, or the phantoms)"
    )


def check_methods(config: dict[str, Any]) -> None:
    """Each list of methods holds only methods of its family (the schema enums come from the same registry)."""
    lists = {"pretrain.methods": config["pretrain"]["methods"],
             "contrastive.methods": (config.get("contrastive") or {}).get("methods") or []}  # fmt: skip
    for where, names in lists.items():
        for name in names:
            if registry.method(name).listed_in != where:
                raise ValueError(f"{where} has {name!r}, a {registry.method(name).family} method; "
                                 f"list it under {registry.method(name).listed_in}")  # fmt: skip


def check_inits(config: dict[str, Any]) -> None:
    """Every `finetune.inits` entry can be built: its method is configured, its encoder and weights exist."""
    encoders, finetune = config["encoders"], config["finetune"]
    for init in finetune["inits"]:
        if init in registry.BY_NAME:
            where = registry.method(init).listed_in
            block, key = where.split(".")
            if init not in ((config.get(block) or {}).get(key) or []):
                raise ValueError(f"finetune.inits has {init!r} but {where} does not; add it there")
            continue
        spec = parse_init(init)
        if spec.entries:
            check_entry(config, spec)
            continue
        if spec.encoder_key not in encoders:
            raise ValueError(
                f"finetune.inits has {init!r} but encoders has no {spec.encoder_key!r}; "
                f"known encoders: {sorted(encoders)}"
            )
        if spec.weights_key and not (finetune.get(spec.weights_key) or {}).get(spec.encoder_key):
            raise ValueError(
                f"finetune.inits has {init!r}: set finetune.{spec.weights_key}.{spec.encoder_key} to a "
                "local weights file (no downloads at run time), or remove it from finetune.inits"
            )
    if config["pretrain"]["encoder"] not in encoders:
        encoder = config["pretrain"]["encoder"]
        raise ValueError(f"pretrain.encoder {encoder!r} is not in encoders (known: {sorted(encoders)})")


def check_entry(config: dict[str, Any], spec: InitSpec) -> None:
    """An init named by a config entry (a published encoder) has its entry, a known format, an `encoders`
    architecture and its file in place."""
    entries = config.get(spec.entries) or {}
    if spec.entry not in entries:
        raise ValueError(
            f"finetune.inits has {spec.name!r} but {spec.entries} has no {spec.entry!r}; "
            f"known {spec.entries}: {sorted(entries)}"
        )
    entry = entries[spec.entry]
    if spec.kind == "external":  # the one entries kind today: a known format, an input norm where it has none
        resolve_external(spec.entry, entry)
    where = f"{spec.entries}.{spec.entry}"
    if entry["encoder"] not in config["encoders"]:
        raise ValueError(
            f"{where}.encoder {entry['encoder']!r} is not in encoders; add an entry with the "
            f"checkpoint's architecture (known: {sorted(config['encoders'])})"
        )
    if not Path(entry["path"]).exists():
        raise FileNotFoundError(
            f"{where}.path {entry['path']} does not exist; point it at the downloaded "
            f"checkpoint, or remove {spec.name} from finetune.inits"
        )


def check_contrastive(config: dict[str, Any]) -> None:
    """Every joint-embedding method has its settings block and every contrastive encoder is an `encoders` key."""
    contrastive = config.get("contrastive") or {}
    for method in contrastive.get("methods") or []:
        if not contrastive.get(method):
            raise ValueError(f"contrastive.methods has {method!r} but contrastive.{method} (its settings) is missing")
    for encoder in contrastive.get("encoders") or []:
        if encoder not in config["encoders"]:
            raise ValueError(
                f"contrastive.encoders has {encoder!r} but encoders has no such key; "
                f"known encoders: {sorted(config['encoders'])}"
            )
