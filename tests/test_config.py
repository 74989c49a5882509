"""Config files shipped with the repository validate and build their encoders; bad keys and values are named."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from cxrmim import registry
from cxrmim.config import DEFAULT_CONFIG, REPO_ROOT, load_config, merge, validate_config
from cxrmim.models.encoders import create_encoder, model_summary

SHIPPED = sorted((REPO_ROOT / "configs").glob("*.yaml")) + sorted((REPO_ROOT / "tests" / "configs").glob("*.yaml"))


def test_configs_folder_is_covered():
    assert REPO_ROOT / "configs" / "paper.yaml" in SHIPPED


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_shipped_config_validates_and_builds_its_encoders(path: Path):
    config = load_config(path)
    image_size, patch_size = config["prepare"]["image_size"], config["patch_validity"]["patch_size"]
    for key, entry in config["encoders"].items():
        model = create_encoder(entry, image_size, patch_size, num_classes=4).eval()
        with torch.no_grad():
            assert model(torch.zeros(1, 1, image_size, image_size)).shape == (1, 4), key
    assert config["pretrain"]["encoder"] in config["encoders"]


def test_paper_config_builds_vit_b16_and_resnet50():
    """The merged paper config, through the create_encoder that pretraining and fine-tuning use, at 224 px / 16."""
    config = load_config(REPO_ROOT / "configs" / "paper.yaml")
    assert (config["prepare"]["image_size"], config["patch_validity"]["patch_size"]) == (224, 16)
    vit = create_encoder(config["encoders"][config["pretrain"]["encoder"]], 224, 16)
    summary = model_summary(vit, "vit_base_patch16_224")
    assert (summary["depth"], summary["width"], vit.blocks[0].attn.num_heads) == (12, 768, 12)
    assert vit.blocks[0].mlp.fc1.out_features == 3072
    assert (
        85.0e6 < summary["n_parameters"] < 86.0e6
    )  # ViT-B/16 without head: 85.8 M with 3 input channels, 85.4 M with 1
    resnet = model_summary(create_encoder(config["encoders"]["resnet50"], 224, 16), "resnet50")
    assert 23.4e6 < resnet["n_parameters"] < 23.6e6 and resnet["width"] == 2048  # ResNet-50 without its head


def explicit_keys(section: dict, prefix: str = "") -> set[str]:
    """Dotted key paths of a config section, nested mappings included (their keys, not just the mapping)."""
    keys = set()
    for key, value in section.items():
        keys.add(prefix + key)
        if isinstance(value, dict) and value:
            keys |= explicit_keys(value, f"{prefix}{key}.")
    return keys


# Sections whose keys shape results (plots, resources and the `encoders` entries, keyed by architecture, do not
# reach another config's runs through the merge), and keys that never change a number wherever they appear.
RESULT_SECTIONS = (
    "dataset",
    "prepare",
    "lung_masks",
    "split",
    "label_fractions",
    "patch_validity",
    "text",
    "pretrain",
    "contrastive",
    "finetune",
    "tables",
)
NOT_RESULT_KEYS = {"resources", "device", "cpu_fallback", "compile", "num_workers", "workers", "n_figure_images"}
STUDY_CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml"))


def unused_subsections(name: str, merged: dict) -> set[str]:
    """Subsections the merged config never reads: phantom settings of a real dataset, blocks of methods not run."""
    if name == "dataset" and merged["dataset"]["kind"] != "synthetic":
        return {"synthetic"}
    if name in ("pretrain", "contrastive"):
        methods = set(merged[name].get("methods") or [])
        own = registry.own_sections(name)  # method -> its own subsection of this block
        unused = {section for section in own.values() if not any(own.get(m) == section for m in methods)}
        return unused | (set() if methods or name == "pretrain" else {"encoders"})
    return set()


def inherited_result_keys(name: str, stated: dict, merged: dict) -> list[str]:
    """Keys of the CPU default's section `name` that shape results and that the config file does not state."""
    default = yaml.safe_load(DEFAULT_CONFIG.read_text())[name]
    skip = NOT_RESULT_KEYS | unused_subsections(name, merged)
    missing = explicit_keys(default) - explicit_keys(stated)
    return sorted(key for key in missing if not skip & set(key.split(".")))


@pytest.mark.parametrize("path", STUDY_CONFIGS, ids=lambda p: p.name)
def test_every_stated_section_states_every_key_that_shapes_results(path: Path):
    """Nothing of the CPU default's recipe reaches another config's runs unseen: a section a config file writes
    states each of its result-shaping keys (the recursive merge would keep the default's value for the rest)."""
    stated = yaml.safe_load(path.read_text())
    merged = load_config(path)
    for name in RESULT_SECTIONS:
        if name in stated:
            missing = inherited_result_keys(name, stated[name], merged)
            assert not missing, f"{path.name} inherits {name}: {missing} from workflow_config.yaml; state them"


def test_paper_config_states_every_section_that_shapes_results():
    """The paper recipe writes every result section, down to each method's block (SimSiam's views, MRM's text)."""
    stated = yaml.safe_load((REPO_ROOT / "configs" / "paper.yaml").read_text())
    assert not [name for name in RESULT_SECTIONS if name not in stated]
    merged = load_config(REPO_ROOT / "configs" / "paper.yaml")
    assert set(registry.own_sections("pretrain").values()) <= set(stated["pretrain"])
    assert set(registry.methods(registry.JOINT)) <= set(stated["contrastive"])
    for method in registry.methods(registry.JOINT):  # 224 px views, not the CPU default's 32
        assert merged["contrastive"][method]["augment"]["view_size"] in (None, 224)


def test_load_config_reads_files_and_inline_json(tmp_path: Path):
    override = {"finetune": {"epochs": 2}}
    (tmp_path / "override.json").write_text(json.dumps(override))
    from_file = load_config(tmp_path / "override.json")
    assert from_file["finetune"]["epochs"] == 2 and from_file["finetune"]["batch_size"]  # merged over the default
    assert load_config(json.dumps(override)) == from_file
    assert load_config(json.dumps(override), defaults=False) == override  # partial: not merged, not validated
    with pytest.raises(FileNotFoundError, match="nothere.yaml"):
        load_config(tmp_path / "nothere.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="list.yaml.*mapping"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(ValueError, match="finetune.*num_workers"):  # removed: nothing read it
        load_config(json.dumps({"finetune": {"num_workers": 2}}))


def test_unknown_key_and_bad_value_are_named():
    config = load_config()
    with pytest.raises(ValueError, match="pretrain.*'epoch' was unexpected"):
        validate_config(merge(config, {"pretrain": {"epoch": 3}}))
    with pytest.raises(ValueError, match="split.test_fraction"):
        validate_config(merge(config, {"split": {"test_fraction": 1.5}}))
    with pytest.raises(ValueError, match="finetune.inits"):
        validate_config(merge(config, {"finetune": {"inits": ["pretrained!"]}}))
    validate_config(merge(config, {"finetune": {"inits": ["rgmim-lung", "imagenet_resnet10t"]}}))


def test_merge_is_recursive():
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


def test_seeds_by_budget_is_spelled_as_budget_files_and_ignores_budgets_not_run():
    """A config that changes `fractions` need not restate the default's 1% entry; a misspelt key is an error."""
    config = load_config(
        json.dumps(
            {
                "label_fractions": {
                    "fractions": [0.01, 1.0],
                    "counts": [100],
                    "seeds_by_budget": {"frac0.01": [0, 1, 2], "n100": [5]},
                }
            }
        )
    )
    assert config["label_fractions"]["seeds_by_budget"]["n100"] == [5]
    load_config(json.dumps({"label_fractions": {"fractions": [0.1, 1.0]}}))  # the default's frac0.01 entry: unused
    with pytest.raises(ValueError, match=r"seeds_by_budget key 'frac0.010'.*write 'frac0.01'"):
        load_config(json.dumps({"label_fractions": {"seeds_by_budget": {"frac0.010": [2]}}}))
    with pytest.raises(ValueError, match="seeds_by_budget"):
        load_config(json.dumps({"label_fractions": {"seeds_by_budget": {"1%": [2]}}}))
