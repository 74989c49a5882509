"""Published encoders as inits: each format loads strictly after its remapping, with its authors' conventions;
a wrong key, shape, container, prefix or pickle is an error that names it. Per-init recipes merge over finetune."""

from __future__ import annotations

import fractions
from pathlib import Path

import pytest
import torch
import yaml
from external_checkpoints import ENCODERS, VIT_DIM, vit_encoder_state, write_all, write_mrm

from cxrmim.config import DEFAULT_CONFIG, REPO_ROOT, merge, validate_config
from cxrmim.device import select_device
from cxrmim.external_formats import resolve_external
from cxrmim.models.external import load_external
from cxrmim.recipe import LR_REFERENCE_BATCH, FinetuneSettings, check_recipes, init_settings
from cxrmim.train.finetune_optim import Schedule, build_optimizer

IMAGE_SIZE = 32  # a 2 x 2 grid of 16-px patches: the 14 x 14 positions must be resampled


@pytest.fixture(scope="module")
def entries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    return write_all(tmp_path_factory.mktemp("external"))


def load(key: str, entry: dict, encoder: dict | None = None):
    """Load one entry into a 2-class classifier."""
    return load_external(resolve_external(key, entry), encoder or ENCODERS[entry["encoder"]], IMAGE_SIZE, 2, 0.0)


def stored(entry: dict) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors as written (the container unwrapped)."""
    if entry["path"].endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(entry["path"])
    obj = torch.load(entry["path"], weights_only=False)
    return obj.get("model") or obj.get("state_dict") or obj


@pytest.mark.parametrize("key", ["fair-mae", "medical-mae", "mrm"])
def test_mae_family_loads_the_encoder_with_summed_stem_resampled_positions_and_mae_pooling(entries, key):
    model, norm, info = load(key, entries[key])
    file = stored(entries[key])
    assert torch.equal(model.patch_embed.proj.weight, file["patch_embed.proj.weight"].sum(1, keepdim=True))
    assert torch.equal(model.blocks[1].mlp.fc2.weight, file["blocks.1.mlp.fc2.weight"])
    assert model.pos_embed.shape == (1, 1 + 4, VIT_DIM) and torch.equal(model.pos_embed[0, 0], file["pos_embed"][0, 0])
    # MAE/MRM fine-tuning: mean of the patch tokens, then a new LayerNorm; the pretraining `norm` is dropped.
    assert isinstance(model.norm, torch.nn.Identity) and isinstance(model.fc_norm, torch.nn.LayerNorm)
    assert model.global_pool == "avg" and info["pool"] == "avg-fcnorm" and info["patch_size"] == 16
    expected = {"fair-mae": (0.449, 0.226), "medical-mae": (0.5056, 0.252), "mrm": (0.4978, 0.2449)}[key]
    assert (norm.mean, norm.std) == pytest.approx(expected, abs=1e-3) and info["input_norm_source"] == "format"
    assert info["file"] == Path(entries[key]["path"]).name  # the name only, never the local directory


def test_cnn_formats_drop_only_their_documented_keys(entries):
    model, norm, info = load("xrv", entries["xrv"])
    file = stored(entries["xrv"])
    assert torch.equal(model.features.conv0.weight, file["features.conv0.weight"])  # already one channel
    assert model.get_classifier().out_features == 2 and info["dropped_keys"] == 3  # classifier w/b, op_threshs
    assert norm.std == pytest.approx(1 / 2048) and norm.mean == 0.5  # (2 x / 255 - 1) * 1024
    model, norm, _ = load("mgca", entries["mgca"])
    assert torch.equal(
        model.conv1.weight, stored(entries["mgca"])["img_encoder_q.model.conv1.weight"].sum(1, keepdim=True)
    )
    assert (norm.mean, norm.std) == (0.5, 0.5)
    model, norm, info = load("timm-state", entries["timm-state"])
    assert info["input_norm_source"] == "config" and model.get_classifier().out_features == 2
    model, norm, info = load("timm-folder", entries["timm-folder"])
    assert info["input_norm_source"] == "config.json" and isinstance(model.norm, torch.nn.LayerNorm)


def test_unexpected_and_missing_keys_fail_with_the_listing(entries, tmp_path):
    path = write_mrm(tmp_path / "MRM.pth")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["model"]["blocks.1.extra.weight"] = torch.zeros(3)
    del checkpoint["model"]["blocks.0.attn.proj.bias"]
    torch.save(checkpoint, path)
    with pytest.raises(
        ValueError,
        match=r"missing \(1\): \['blocks.0.attn.proj.bias'\].*unexpected \(1\): "
        r"\['blocks.1.extra.weight'\]",
    ) as err:
        load("mrm", entries["mrm"] | {"path": str(path)})
    assert "MRM.pth" in str(err.value) and "encoders.vit-ext" in str(err.value)


def test_a_wrong_architecture_fails_with_the_shapes(entries):
    wider = {"timm_name": "vit_tiny_patch16_224", "kwargs": {"embed_dim": 48, "depth": 2, "num_heads": 2}}
    with pytest.raises(ValueError, match=r"shape mismatch \(\d+\): .*file \(\d+, 32\) vs model \(\d+, 48\)"):
        load("mrm", entries["mrm"], wider)
    with pytest.raises(ValueError, match=r"missing \(\d+\): \['blocks.2"):  # deeper than the checkpoint
        load(
            "mrm",
            entries["mrm"],
            {
                "timm_name": "vit_tiny_patch16_224",
                "kwargs": {"embed_dim": VIT_DIM, "depth": 3, "num_heads": 2, "mlp_ratio": 2.0},
            },
        )


def test_wrong_container_prefix_and_missing_norm_are_named(entries):
    with pytest.raises(ValueError, match="'model'.*top level has .*state_dict"):
        load("x", entries["mgca"] | {"format": "mrm", "encoder": "resnet-ext"})
    with pytest.raises(ValueError, match=r"prefix 'student\.'.*img_encoder_q\."):
        load("mgca", entries["mgca"] | {"prefix": "student."})
    with pytest.raises(ValueError, match=r"external_inits.t.input_norm"):
        resolve_external("t", {k: v for k, v in entries["timm-state"].items() if k != "input_norm"})
    model, norm, info = load("mrm", entries["mrm"] | {"input_norm": {"mean": 0.5, "std": 0.25}, "pool": "token"})
    assert (norm.mean, norm.std, info["input_norm_source"]) == (0.5, 0.25, "config") and model.global_pool == "token"


def test_pickled_objects_load_only_when_the_config_allows(entries, tmp_path):
    checkpoint = torch.load(entries["medical-mae"]["path"], weights_only=False)
    assert set(checkpoint) == {"model", "optimizer", "epoch", "scaler", "args"}  # argparse args load weights_only
    checkpoint["args"] = fractions.Fraction(1, 3)  # any other object: a real pickle
    path = tmp_path / "pickled.pth"
    torch.save(checkpoint, path)
    entry = entries["medical-mae"] | {"path": str(path)}
    with pytest.raises(ValueError, match="pickled.pth.*allow_pickle: true"):
        load("medical-mae", entry)
    load("medical-mae", entry | {"allow_pickle": True})


def test_recipes_merge_over_finetune_for_their_inits_only():
    finetune = {
        "inits": ["mae", "external_mrm", "scratch_vit-tiny"],
        "epochs": 2,
        "batch_size": 16,
        "base_lr": 1e-3,
        "augment": {"crop_scale": [0.8, 1.0], "hflip": False},
        "resources": {"gpu": 0},
        "recipes": {
            "mrm": {"inits": ["external_mrm"], "optimizer": "sgd", "augment": {"hflip": True}},
            "mae-ld": {"inits": ["mae"], "layer_decay": 0.55, "current_preset": "randaugment"},
        },
    }
    assert init_settings(finetune, "scratch_vit-tiny", drop=("inits", "resources")) == {
        k: v for k, v in finetune.items() if k not in ("inits", "resources", "recipes")
    }
    mrm = FinetuneSettings.from_config(init_settings(finetune, "external_mrm"))
    assert (mrm.optimizer, mrm.hflip, mrm.crop_scale, mrm.recipe) == ("sgd", True, (0.8, 1.0), "mrm")
    mae = FinetuneSettings.from_config(init_settings(finetune, "mae_r0.75_vit-tiny_s1"))  # by its finetune.inits entry
    assert (mae.layer_decay, mae.current_preset, mae.recipe) == (0.55, "randaugment", "mae-ld")
    check_recipes(finetune)
    with pytest.raises(ValueError, match="recipes.bad.inits has 'byol', which is not in finetune.inits"):
        check_recipes(finetune | {"recipes": {"bad": {"inits": ["byol"]}}})
    with pytest.raises(ValueError, match="mae is in finetune.recipes.a and finetune.recipes.b"):
        check_recipes(finetune | {"recipes": {"a": {"inits": ["mae"]}, "b": {"inits": ["mae"]}}})


def test_sgd_and_the_step_schedule():
    schedule = Schedule(total_steps=100, warmup_steps=10, peak_lr=1.0, kind="step", milestones=(0.5, 0.8), gamma=0.1)
    assert [schedule.lr(s) for s in (0, 9, 10, 49, 50, 79, 80, 99)] == pytest.approx(
        [0.1, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    )
    with pytest.raises(ValueError, match="milestones"):
        Schedule(10, 0, 1.0, "step", (1.5,))
    settings = FinetuneSettings(epochs=1, batch_size=2, base_lr=1.0, optimizer="sgd", momentum=0.8)
    optimizer = build_optimizer(torch.nn.Linear(2, 2), settings, 0.5, None, select_device("cpu"))
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["momentum"] == 0.8


def test_the_documented_nih_config_is_valid_and_resolves():
    """docs/external-encoders.md's example: schema-valid over paper.yaml, formats resolve, recipes check."""
    text = (REPO_ROOT / "docs" / "external-encoders.md").read_text()
    example = yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])
    config = merge(
        merge(
            yaml.safe_load(DEFAULT_CONFIG.read_text()),
            yaml.safe_load((REPO_ROOT / "configs" / "paper.yaml").read_text()),
        ),
        example,
    )
    validate_config(config, "docs/external-encoders.md")
    resolved = {key: resolve_external(key, entry) for key, entry in config["external_inits"].items()}
    assert resolved["mrm"].norm == {"mean": 0.4978, "std": 0.2449} and resolved["medmae-vitb"].pool == "avg-fcnorm"
    check_recipes(config["finetune"])
    sgd = FinetuneSettings.from_config(init_settings(config["finetune"], "external_mrm"))
    assert sgd.base_lr * sgd.batch_size / LR_REFERENCE_BATCH == pytest.approx(0.03)  # MRM's NIH 1% lr


def test_a_prefixed_vit_loads_under_its_prefix_with_the_class_token(tmp_path):
    """MedIM/MGCA's ViT-B: BLIP-style (timm-named) encoder under img_encoder_q.model., read by the class token."""
    encoder = vit_encoder_state()
    state = {f"img_encoder_q.model.{k}": v for k, v in encoder.items()} | {
        "img_encoder_q.global_embed.head.0.weight": torch.randn(8, VIT_DIM),
        "img_decoder_q.conv.weight": torch.randn(4),
    }
    path = tmp_path / "medim_last.ckpt"
    torch.save({"epoch": 49, "state_dict": state}, path)
    model, _, info = load("medim", {"path": str(path), "format": "prefixed", "encoder": "vit-ext"})
    assert torch.equal(model.blocks[0].attn.qkv.weight, encoder["blocks.0.attn.qkv.weight"])
    assert model.global_pool == "token" and isinstance(model.norm, torch.nn.LayerNorm) and info["prefix"]
    renamed = {k.replace("img_encoder_q.model.", "student.backbone."): v for k, v in state.items()}
    torch.save({"state_dict": renamed}, path)
    model, _, _ = load(
        "any", {"path": str(path), "format": "prefixed", "encoder": "vit-ext", "prefix": "student.backbone."}
    )
    assert torch.equal(model.cls_token, encoder["cls_token"])
