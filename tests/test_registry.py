"""The registry is the one list of methods, init kinds, dataset kinds, presets and modes: everything else agrees."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from cxrmim import registry
from cxrmim.analysis.figures import PALETTE, method_colour
from cxrmim.analysis.runs import METHOD_ORDER, method_rank
from cxrmim.codebase import package_file
from cxrmim.config import load_config
from cxrmim.external_formats import FORMATS
from cxrmim.inits import NAME_PART, init_name_pattern, parse_init
from cxrmim.models.masking import MASKING
from cxrmim.train.pretrain import parse_args

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())["properties"]


def enum(node: dict) -> list[str]:
    """The enum of an array property's items, or of the property itself."""
    return (node.get("items") or node)["enum"]


def test_schema_enums_are_the_registry():
    """A method, preset, mode or dataset kind added to the registry is also allowed by the schema (and no other)."""
    finetune, source = SCHEMA["finetune"]["properties"], SCHEMA["lung_masks"]["properties"]["train_sources"]
    expected = {
        "pretrain.methods": (SCHEMA["pretrain"]["properties"]["methods"], registry.methods(registry.MASKED)
                             + registry.methods(registry.REPORT)),
        "contrastive.methods": (SCHEMA["contrastive"]["properties"]["methods"], registry.methods(registry.JOINT)),
        "finetune.modes": (finetune["modes"], registry.names(registry.FINETUNE_MODES)),
        "finetune.augment_presets": (finetune["augment_presets"], registry.names(registry.AUGMENT_PRESETS)),
        "finetune.recipes.*.current_preset": (finetune["recipes"]["additionalProperties"]["properties"]
                                              ["current_preset"], registry.names(registry.AUGMENT_PRESETS)),
        "external_inits.*.format": (SCHEMA["external_inits"]["additionalProperties"]["properties"]["format"],
                                    list(FORMATS)),
        "dataset.kind": (SCHEMA["dataset"]["properties"]["kind"], registry.names(registry.DATASET_KINDS)),
        "lung_masks.train_sources.kind": (source["items"]["properties"]["kind"],
                                          [k.name for k in registry.DATASET_KINDS if k.segmenter_source]),
    }  # fmt: skip
    for where, (node, names) in expected.items():
        assert sorted(enum(node)) == sorted(names), f"schemas/config.schema.yaml {where} != cxrmim.registry"


def alternatives(pattern: str) -> set[str]:
    """The alternatives of a `^(a|b|...)$` pattern."""
    assert pattern.startswith("^(") and pattern.endswith(")$"), pattern
    return set(pattern[2:-2].split("|"))


def test_schema_init_pattern_is_the_registry():
    """finetune.inits allows every method and `<kind>_<key>` of every init kind (external_<key> too), no other."""
    pattern = SCHEMA["finetune"]["properties"]["inits"]["items"]["pattern"]
    assert alternatives(pattern) == alternatives(init_name_pattern()), "schemas/config.schema.yaml finetune.inits"
    assert {f"{k.name}_{NAME_PART}" for k in registry.INIT_KINDS} | set(registry.methods()) == alternatives(pattern)
    for name in ("external_mrm", "imagenet_vit-b16", "scratch_resnet50", "simsiam"):
        assert re.fullmatch(pattern, name), name
    spec = parse_init("external_medical-mae")
    assert (spec.entries, spec.entry, spec.encoder_key, spec.needs_weights) == (
        "external_inits",
        "medical-mae",
        "",
        True,
    )


def test_every_method_section_is_in_the_schema_and_the_default_config():
    config = load_config()
    for method in registry.METHODS:
        if method.section:
            block, key = method.section.split(".")
            assert key in SCHEMA[block]["properties"], f"schemas/config.schema.yaml: add {method.section}"
            assert key in config[block], f"workflow_config.yaml: add {method.section} (the recipe of {method.name})"


def test_entries_are_unique_and_well_formed():
    names = [m.name for m in registry.METHODS] + [k.name for k in registry.INIT_KINDS]
    labels = registry.label_order()
    colours = list(registry.palette().values())
    assert len(set(names)) == len(names) and len(set(labels)) == len(labels)
    assert len({c.lower() for c in colours}) == len(colours), "two methods share a colour"
    for method in registry.METHODS:
        assert re.fullmatch(NAME_PART, method.name) and method.family in registry.FAMILIES
        assert (method.masking in MASKING) == (method.family != registry.JOINT)
        module, _, function = method.builder.partition(":")
        assert package_file(module) is not None and function, method.builder
        if method.reads_reports:
            assert method.family == registry.REPORT
    for kind in registry.DATASET_KINDS:
        if kind.reader:
            assert package_file(kind.reader.partition(":")[0]) is not None, kind.reader


def test_tables_figures_and_argparse_derive_from_it():
    assert METHOD_ORDER[: len(registry.METHODS)] == [m.label for m in registry.METHODS]
    assert METHOD_ORDER.index("MRM") < METHOD_ORDER.index("Transfer")  # MRM / MedIM no longer sort after baselines
    assert PALETTE["RGMIM-lung"] != PALETTE["SimSiam"]
    assert set(PALETTE) == set(METHOD_ORDER)
    # A published encoder's rows carry its config label, in the place and colour of the external init kind.
    assert registry.place_label("MRM (released)", "external_mrm") == "External" and "External" in METHOD_ORDER
    assert registry.place_label("MRM", "mrm_r0.75_vit_s0") == "MRM"
    runs = pd.DataFrame(
        {
            "method": ["MRM (released)", "From Scratch", "RGMIM"],
            "init": ["external_mrm", "scratch_vit", "rgmim_r0.75_vit_s0"],
        }
    )
    assert list(method_rank(runs)) == [METHOD_ORDER.index("External"), METHOD_ORDER.index("From Scratch"), 0]
    assert method_colour("MRM (released)", "external_mrm") == PALETTE["External"] != method_colour("MRM (released)")
    assert parse_init("imagenet_vit").weights_key == "imagenet_weights" and not parse_init("scratch_vit").needs_weights
    common = ["--prepared", "p", "--split", "s", "--validity", "v", "--encoder", "{}", "--settings", "{}", "--out", "o"]
    for name in registry.methods():
        assert parse_args([*common, "--method", name]).method == name


def test_registry_plan_and_inits_stay_torch_free():
    code = "import sys, cxrmim.registry, cxrmim.plan, cxrmim.inits, cxrmim.codebase; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_joint_embedding_models_are_the_registry_joint_methods():
    from cxrmim.models.joint_embedding import JOINT_EMBEDDING_MODELS

    assert set(JOINT_EMBEDDING_MODELS) == set(registry.methods(registry.JOINT))
