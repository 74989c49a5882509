"""Fine-tuning on a tiny hand-made cache: every init kind, model selection on validation, determinism."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch

from cxrmim.inits import parse_init
from cxrmim.models.encoders import InputNorm, create_encoder, save_encoder, timm_kwargs
from cxrmim.recipe import FinetuneSettings
from cxrmim.train.finetune import build_model, finetune, select_epoch
from cxrmim.train.finetune_data import load_finetune_data, write_result
from cxrmim.train.finetune_optim import param_groups

IMAGE = 32
PATCH = 8
TINY_VIT = {"timm_name": "vit_tiny_patch16_224", "kwargs": {"embed_dim": 32, "depth": 1, "num_heads": 2}}
SMALL_RESNET = {"timm_name": "resnet10t", "kwargs": {}}  # timm's smallest ResNet: same code path as resnet50
SETTINGS = {
    "epochs": 3,
    "batch_size": 8,
    "base_lr": 5e-2,
    "weight_decay": 0.05,
    "layer_decay": 0.75,
    "drop_path": 0.0,
    "warmup_epochs": 1,
    "min_steps": 6,
    "augment": {"crop_scale": [0.85, 1.0], "hflip": False},
    "device": "cpu",
}
REPO = Path(__file__).resolve().parents[1]


def make_cache(root: Path, labels: list[str], per_part: dict[str, int]) -> dict[str, Path]:
    """Images whose class is a bright square at a class-specific place; split into train/val/test parts."""
    rng = np.random.default_rng(0)
    rows, images = [], []
    for part, count in per_part.items():
        for i in range(count):
            label_id = i % len(labels)
            image = rng.integers(0, 60, size=(IMAGE, IMAGE)).astype(np.uint8)
            corner = 4 + 8 * label_id
            image[corner : corner + 8, corner : corner + 8] = 220
            images.append(image)
            rows.append({"id": f"img{len(rows)}", "label": labels[label_id], "group": f"g{len(rows)}", "part": part})
    prepared = root / "prepared"
    prepared.mkdir(parents=True)
    stack = np.stack(images)
    np.save(prepared / "images.npy", stack)
    np.save(prepared / "masks.npy", np.ones_like(stack))
    split = pd.DataFrame(rows).reset_index(names="index")
    manifest = split.assign(source="synthetic", view="PA", has_mask=1, report="")
    manifest[["index", "id", "label", "source", "group", "view", "has_mask", "report"]].to_csv(
        prepared / "manifest.csv", index=False
    )
    split.to_csv(root / "split.csv", index=False)
    split[split["part"] == "train"][["index", "id", "label"]].to_csv(root / "subset.csv", index=False)
    return {"prepared": prepared, "split": root / "split.csv", "subset": root / "subset.csv"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three classes, 24 train / 9 val / 9 test images."""
    return make_cache(
        tmp_path_factory.mktemp("cache3"), ["COVID-19", "Normal", "Viral_Pneumonia"], {"train": 24, "val": 9, "test": 9}
    )


def run(
    cache: dict[str, Path], init: str, encoder: dict, weights: str | None = None, seed: int = 0, **overrides
) -> dict:
    """Fine-tune in-process and return metrics.json content (through a JSON round trip)."""
    data = load_finetune_data(cache["prepared"], cache["split"], cache["subset"])
    settings = FinetuneSettings.from_config({**SETTINGS, **overrides})
    result = finetune(
        data, parse_init(init), encoder, settings, seed=seed, fraction=1.0, weights=weights, patch_size=PATCH
    )
    return json.loads(json.dumps(result.metrics)), result


def test_scratch_vit_cli_writes_all_outputs(cache: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [
        "--prepared",
        str(cache["prepared"]),
        "--split",
        str(cache["split"]),
        "--subset",
        str(cache["subset"]),
        "--init",
        "scratch_vit",
        "--encoder",
        json.dumps(TINY_VIT),
        "--settings",
        json.dumps(SETTINGS),
        "--patch-size",
        str(PATCH),
        "--seed",
        "0",
        "--fraction",
        "1.0",
        "--out",
        str(out),
        "--log",
        str(tmp_path / "log.txt"),
    ]
    cli = importlib.util.spec_from_file_location("finetune_cli", REPO / "scripts" / "finetune.py")
    module = importlib.util.module_from_spec(cli)
    cli.loader.exec_module(module)
    module.main(command)  # in-process: a subprocess would pay the torch import again
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "From Scratch" and metrics["architecture"] == "ViT"
    assert metrics["mask_ratio"] is None and metrics["n_labels"] == 24 and "n_train" not in metrics
    assert metrics["classes"] == ["COVID-19", "Normal", "Viral_Pneumonia"]
    for key in ("accuracy", "f1_macro", "precision_macro", "recall_macro", "auc_macro", "loss", "recall_Normal"):
        assert key in metrics["test"] and key in metrics["val"]
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3]
    assert {"lr", "train_loss", "val_accuracy", "test_accuracy", "test_auc_macro"} <= set(history.columns)
    predictions = pd.read_csv(out / "predictions.csv")
    assert list(predictions.columns) == [
        "index",
        "id",
        "label",
        "pred",
        "prob_COVID-19",
        "prob_Normal",
        "prob_Viral_Pneumonia",
    ]
    assert len(predictions) == 9
    assert np.allclose(predictions.filter(like="prob_").sum(axis=1), 1.0, atol=1e-5)
    assert not list(out.glob("*.tmp"))
    best = history.set_index("epoch").loc[metrics["best_epoch"]]
    assert best["test_accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert (predictions["pred"] == predictions["label"]).mean() == pytest.approx(metrics["test"]["accuracy"])


def test_scratch_resnet_runs(cache: dict[str, Path]) -> None:
    # resnet10t stands in for resnet50 to keep the test fast; the code path (timm CNN head, no layer decay) is the same.
    metrics, result = run(cache, "scratch_resnet50", SMALL_RESNET, epochs=2)
    assert metrics["method"] == "From Scratch" and metrics["architecture"] == "resnet10t"
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    # The CNN learns this easy task quickly: a broken optimiser or schedule would leave the loss flat.
    assert result.history["train_loss"].iloc[-1] < result.history["train_loss"].iloc[0]


def test_architecture_label_names_a_resized_encoder_by_its_entry():
    """A resized ResNet (the CPU default's half-width ResNet-10t) must not be labelled as the timm model it resizes."""
    from cxrmim.train.finetune import architecture_label

    assert architecture_label({"timm_name": "resnet50", "kwargs": {}}) == "ResNet-50"
    assert architecture_label({"timm_name": "resnet10t", "kwargs": {}}) == "resnet10t"
    half = {"timm_name": "resnet10t", "kwargs": {"channels": [32, 64, 128, 256]}, "label": "ResNet-10t/2"}
    assert architecture_label(half) == "ResNet-10t/2"
    assert architecture_label({"timm_name": "vit_tiny_patch16_224", "kwargs": {"depth": 4}}) == "ViT"


def test_pretrained_init_loads_encoder_weights(cache: dict[str, Path], tmp_path: Path) -> None:
    encoder = create_encoder(TINY_VIT, IMAGE, PATCH)
    torch.nn.init.constant_(encoder.blocks[0].mlp.fc1.weight, 0.123)
    weights = tmp_path / "rgmim_r0.75_vit_s0" / "encoder.safetensors"
    # A pretraining run on other grey statistics: fine-tuning must normalise its input the same way.
    save_encoder(
        encoder, weights, TINY_VIT["timm_name"], timm_kwargs(TINY_VIT, IMAGE, PATCH, 0), norm=InputNorm(0.4, 0.2)
    )
    init = parse_init("rgmim_r0.75_vit_s0")
    model, _ = build_model(init, TINY_VIT, str(weights), IMAGE, PATCH, num_classes=3, drop_path=0.0)
    assert torch.all(model.blocks[0].mlp.fc1.weight == 0.123)
    # The patch size comes from the file's metadata, not from --patch-size.
    data = load_finetune_data(cache["prepared"], cache["split"], cache["subset"])
    result = finetune(
        data,
        init,
        TINY_VIT,
        FinetuneSettings.from_config({**SETTINGS, "epochs": 1}),
        seed=0,
        fraction=0.5,
        weights=str(weights),
        patch_size=None,
    )
    assert result.metrics["method"] == "RGMIM" and result.metrics["mask_ratio"] == 0.75
    assert result.metrics["fraction"] == 0.5
    assert result.metrics["input_norm"] == {"mean": [0.4], "std": [0.2]}


def test_subset_smaller_than_batch_keeps_the_configured_lr(cache: dict[str, Path]) -> None:
    """24 images with batch 64: one full batch of 24 per step, peak lr still base_lr x 64 / 256."""
    metrics, _ = run(cache, "scratch_vit", TINY_VIT, epochs=1, batch_size=64, min_steps=0)
    assert metrics["batch_size"] == 24 and metrics["steps"] == 1
    assert metrics["peak_lr"] == pytest.approx(SETTINGS["base_lr"] * 64 / 256)


def test_binary_task_has_auc(tmp_path: Path) -> None:
    binary = make_cache(tmp_path, ["Normal", "Pneumonia"], {"train": 16, "val": 6, "test": 6})
    metrics, _ = run(binary, "scratch_vit", TINY_VIT, epochs=2)
    assert metrics["classes"] == ["Normal", "Pneumonia"]
    assert metrics["test"]["auc_macro"] is not None and 0.0 <= metrics["test"]["auc_macro"] <= 1.0


def test_imagenet_without_weights_names_the_config_key(cache: dict[str, Path]) -> None:
    with pytest.raises(FileNotFoundError, match=r"finetune\.imagenet_weights\.vit"):
        run(cache, "imagenet_vit", TINY_VIT, weights=None)
    with pytest.raises(FileNotFoundError, match=r"finetune\.imagenet_weights\.resnet50"):
        run(cache, "imagenet_resnet50", SMALL_RESNET, weights="/nonexistent/resnet50.safetensors")


def test_unknown_init_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown init"):
        parse_init("byol")


def test_selection_uses_validation_not_test() -> None:
    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3, 4],
            "val_accuracy": [0.5, 0.8, 0.8, 0.6],
            "val_loss": [1.0, 0.7, 0.6, 0.9],
            "test_accuracy": [0.99, 0.5, 0.5, 0.98],  # best test epochs must not be chosen
            "test_loss": [0.1, 2.0, 2.0, 0.1],
        }
    )
    assert select_epoch(history) == 3  # tie on val accuracy broken by lower val loss
    assert select_epoch(history.drop(columns=["val_accuracy", "val_loss"])) == 4  # no validation: last epoch


def test_training_reports_the_validation_selected_epoch(cache: dict[str, Path]) -> None:
    metrics, result = run(cache, "scratch_vit", TINY_VIT)
    history = result.history
    assert metrics["best_epoch"] == select_epoch(history)
    chosen = history.set_index("epoch").loc[metrics["best_epoch"]]
    assert metrics["test"]["accuracy"] == pytest.approx(chosen["test_accuracy"])


def test_same_seed_gives_identical_metrics(cache: dict[str, Path], tmp_path: Path) -> None:
    for name in ("a", "b"):
        _, result = run(cache, "scratch_vit", TINY_VIT, seed=3)
        write_result(result, tmp_path / name)
    assert (tmp_path / "a" / "metrics.json").read_text() == (tmp_path / "b" / "metrics.json").read_text()
    assert (tmp_path / "a" / "predictions.csv").read_text() == (tmp_path / "b" / "predictions.csv").read_text()


def test_vit_param_groups_decay_by_layer() -> None:
    model = create_encoder(TINY_VIT, IMAGE, PATCH, num_classes=3)
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.5)
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert by_param[id(named["head.weight"])]["lr_scale"] == 1.0
    assert by_param[id(named["blocks.0.attn.qkv.weight"])]["lr_scale"] == 0.5
    assert by_param[id(named["patch_embed.proj.weight"])]["lr_scale"] == 0.25
    assert by_param[id(named["pos_embed"])]["weight_decay"] == 0.0
    assert by_param[id(named["cls_token"])]["weight_decay"] == 0.0
    assert by_param[id(named["norm.weight"])]["weight_decay"] == 0.0
    assert by_param[id(named["blocks.0.attn.qkv.bias"])]["weight_decay"] == 0.0
    assert by_param[id(named["blocks.0.attn.qkv.weight"])]["weight_decay"] == 0.05


def test_metrics_name_the_built_model_and_its_input_norm(cache: dict[str, Path]) -> None:
    metrics, _ = run(cache, "scratch_vit-tiny", TINY_VIT, epochs=1)
    encoder = create_encoder(TINY_VIT, IMAGE, PATCH)
    assert metrics["model"] == {
        "timm_name": "vit_tiny_patch16_224",
        "depth": 1,
        "width": 32,
        "n_parameters": sum(p.numel() for p in encoder.parameters()),
    }
    assert metrics["input_norm"] == {"mean": [0.5], "std": [0.25]}  # scratch: the grey cache statistics


def test_imagenet_init_uses_timm_weights_and_their_normalisation(cache: dict[str, Path], tmp_path: Path) -> None:
    source = timm.create_model("resnet10t", pretrained=False, num_classes=1000)
    weights = tmp_path / "resnet10t_in1k.pth"
    torch.save(source.state_dict(), weights)
    model, _norm = build_model(
        parse_init("imagenet_resnet10t"), SMALL_RESNET, str(weights), IMAGE, PATCH, num_classes=3, drop_path=0.0
    )
    assert torch.allclose(model.conv1[0].weight, source.conv1[0].weight.sum(dim=1, keepdim=True))
    assert model.fc.out_features == 3
    metrics, _ = run(cache, "imagenet_resnet10t", SMALL_RESNET, weights=str(weights), epochs=1)
    assert metrics["input_norm"]["mean"] == pytest.approx([(0.485 + 0.456 + 0.406) / 3])
    assert metrics["input_norm"]["std"] == pytest.approx([(0.229 + 0.224 + 0.225) / 3])
    assert metrics["model"]["timm_name"] == "resnet10t" and metrics["model"]["depth"] is None
    assert metrics["method"] == "Transfer"
