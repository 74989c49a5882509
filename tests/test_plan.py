"""The plan: which runs a config asks for, and the checks that refuse a config before any job runs."""

from __future__ import annotations

import copy
import re

import pytest

from cxrmim import registry
from cxrmim.config import load_config
from cxrmim.plan import Plan, check, parse_variant, run_outputs, variant_pattern, variant_suffix

# The one-dataset shape (dataset.name set): what these tests count; tests/test_experiment.py covers several.
DEFAULT = load_config()
DEFAULT["dataset"]["name"] = "phantoms"


def config(**sections: dict) -> dict:
    """The default config with some sections replaced (shallowly merged)."""
    changed = copy.deepcopy(DEFAULT)
    for name, values in sections.items():
        changed[name] = {**(changed.get(name) or {}), **values}
    return changed


def test_default_plan_names_every_run():
    plan = Plan(DEFAULT)
    assert plan.pretrain_seeds == [0] and plan.budgets("phantoms") == ["frac0.01", "frac0.1", "frac1"]
    assert plan.pretrain_runs == sorted(f"{m}_r0.75_vit-cpu_s0" for m in DEFAULT["pretrain"]["methods"])
    assert plan.contrastive_runs == [f"{m}_resnet10t-half_s0" for m in ("simsiam", "byol", "skd", "cross")]
    assert plan.main_inits[-2:] == ["scratch_vit-cpu", "scratch_resnet10t-half"]
    runs = plan.finetune_runs("phantoms")
    # 11 inits x 3 budgets x 2 subset seeds, one variant; no extra ratios.
    assert len(plan.main_inits) == 11 and len(runs) == 66 and len(set(runs)) == 66
    assert "finetune/medim_r0.75_vit-cpu_s0/frac0.01_seed1" in runs
    assert plan.report_figure_runs("phantoms") == {"mrm_reconstructions": "mrm_r0.75_vit-cpu_s0",
                                         "medim_masks": "medim_r0.75_vit-cpu_s0"}  # fmt: skip


def test_ratio_runs_budgets_and_variants():
    plan = Plan(config(pretrain={"mask_ratios": [0.5], "seeds": [0, 1]},
                       label_fractions={"seeds_by_budget": {"frac0.01": [0, 1, 2]}},
                       finetune={"modes": ["full", "probe"], "augment_presets": ["current", "classic"]}))  # fmt: skip
    assert "rgmim_r0.5_vit-cpu_s1" in plan.ratio_runs and "mrm_r0.5_vit-cpu_s0" in plan.ratio_runs
    assert plan.budget_seeds("phantoms", "frac0.01") == [0, 1, 2] and plan.budget_seeds("phantoms", "frac1") == [0, 1]
    assert plan.variants == ["", "_full-classic", "_probe-current", "_probe-classic"]
    runs = plan.finetune_runs("phantoms")
    assert "finetune/rgmim_r0.5_vit-cpu_s1/frac1_seed0_probe-classic" in runs
    assert not any(r.startswith("finetune/rgmim_r0.5_vit-cpu_s1/frac0.01") for r in runs)  # ratios at 100% only
    assert plan.first_variant() == ("full", "current")


def test_variant_spellings_round_trip_and_match_the_wildcard():
    pattern = re.compile(variant_pattern())
    for mode in registry.names(registry.FINETUNE_MODES):
        for preset in registry.names(registry.AUGMENT_PRESETS):
            suffix = variant_suffix(mode, preset)
            assert pattern.fullmatch(suffix)
            assert parse_variant(suffix) == (None if suffix == "" else (mode, preset))
    assert not pattern.fullmatch("_full-bogus")


def test_rule_outputs_are_the_registry_files_of_its_methods():
    masked = tuple(m.name for m in registry.METHODS if m.has_mask_ratio)
    outputs = run_outputs(masked, "results/x/pretrain/{method}_r{ratio}_{encoder}_s{pseed}")
    assert list(outputs) == ["encoder", "autoencoder", "history", "timm_config", "timm_weights"]
    assert outputs["timm_weights"] == "results/x/pretrain/{method}_r{ratio}_{encoder}_s{pseed}/timm/model.safetensors"
    assert sorted(run_outputs(registry.methods(registry.JOINT), "r").values()) == sorted(
        f"r/{name}" for name in registry.method("byol").outputs
    )
    with pytest.raises(ValueError, match="declare different output files"):
        run_outputs(("mae", "byol"), "r")  # one rule cannot write an autoencoder for only some of its methods


def test_method_settings_keep_only_their_own_subsection():
    plan = Plan(DEFAULT)
    mrm, mae = plan.method_settings("mrm", drop=("methods",)), plan.method_settings("mae")
    assert "mrm" in mrm and "medim" not in mrm and "methods" not in mrm
    assert "mrm" not in mae and "medim" not in mae and mae["epochs"] == DEFAULT["pretrain"]["epochs"]
    assert plan.method_settings("byol") == DEFAULT["contrastive"]["byol"]


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"pretrain": {"methods": ["rgmim"]}}, "finetune.inits has 'rgmim-lung' but pretrain.methods does not"),
        ({"contrastive": {"methods": ["simsiam"]}}, "finetune.inits has 'byol' but contrastive.methods does not"),
        ({"finetune": {"inits": ["imagenet_vit-cpu"]}}, "set finetune.imagenet_weights.vit-cpu"),
        ({"finetune": {"inits": ["scratch_nope"]}}, "encoders has no 'nope'"),
        ({"contrastive": {"byol": None}}, r"contrastive.byol \(its settings\) is missing"),
        ({"contrastive": {"encoders": ["nope"]}}, "contrastive.encoders has 'nope'"),
        ({"pretrain": {"methods": ["simsiam"]}}, "list it under contrastive.methods"),
    ],
)
def test_checks_refuse_a_config_with_the_fix(sections: dict, message: str):
    with pytest.raises(ValueError, match=message):
        check(config(**sections))


def test_the_default_config_passes():
    check(DEFAULT)


def test_external_inits_are_checked_and_planned_from_their_entry(tmp_path):
    """`external_<key>`: its external_inits entry exists, has a known format, an encoders architecture and its file;
    recipes list configured inits only; the plan takes the architecture from the entry."""
    weights = tmp_path / "MRM.pth"
    weights.write_bytes(b"")
    entry = {"path": str(weights), "format": "mrm", "encoder": "vit-cpu", "label": "MRM (released)"}
    inits = {"inits": ["rgmim", "external_mrm"]}
    good = config(finetune=inits) | {"external_inits": {"mrm": entry}}
    check(good)
    plan = Plan(good)
    assert "external_mrm" in plan.main_inits and plan.encoder_of("external_mrm") == "vit-cpu"
    assert plan.encoder_of(plan.main_inits[0]) == DEFAULT["pretrain"]["encoder"]
    assert "finetune/external_mrm/frac1_seed0" in plan.finetune_runs("phantoms")
    bad = {
        "external_inits has no 'mrm'": {},
        "external_inits.mrm.encoder 'nope' is not in encoders": {"mrm": entry | {"encoder": "nope"}},
        "external_inits.mrm.format 'pt' is unknown": {"mrm": entry | {"format": "pt"}},
    }
    for message, entries in bad.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            check(good | {"external_inits": entries})
    with pytest.raises(FileNotFoundError, match="external_inits.mrm.path .* does not exist"):
        check(good | {"external_inits": {"mrm": entry | {"path": str(tmp_path / "missing.pth")}}})
    with pytest.raises(ValueError, match="finetune.recipes.sgd.inits has 'mae', which is not in finetune.inits"):
        check(config(finetune={**inits, "recipes": {"sgd": {"inits": ["mae"]}}}) | {"external_inits": {"mrm": entry}})
