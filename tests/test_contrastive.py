"""SimSiam and BYOL on the shared loop: training, falling loss on phantoms, timm export, views, exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from safetensors.torch import load_file
from test_pretrain import build_tiny_cache

from cxrmim.data.synthetic import PhantomSettings, generate_dataset
from cxrmim.data.validity import run_patch_validity
from cxrmim.data.views import ViewAugment, crop_rotate_theta, random_view, two_views
from cxrmim.inits import parse_init
from cxrmim.models.encoders import create_encoder, read_encoder_metadata
from cxrmim.optim import seed_everything
from cxrmim.registry import JOINT
from cxrmim.train.finetune import build_model
from cxrmim.train.pretrain import main as pretrain_main
from cxrmim.train.pretrain import run_pretraining

SMALL_RESNET = {"timm_name": "resnet10t", "kwargs": {}}  # same code path as the paper's resnet50
TINY_VIT = {
    "timm_name": "vit_tiny_patch16_224",
    "kwargs": {"embed_dim": 32, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0},
}
HEADS = {"projection_hidden_dim": 32, "projection_dim": 16, "prediction_hidden_dim": 8}


def settings(method: str, **overrides: object) -> dict:
    """A `contrastive.<method>` section for a model that trains in about a second per epoch."""
    values = {
        "heads": HEADS,
        "epochs": 3,
        "batch_size": 8,
        "effective_batch_size": 16,
        "base_lr": 1.0e-2,
        "weight_decay": 1.0e-4,
        "betas": [0.9, 0.999],
        "warmup_epochs": 1,
        "augment": {"crop_scale": [0.5, 1.0], "rotation": 10, "hflip": True, "blur_probability": 0.5},
        "seed": 0,
        "device": "cpu",
    }
    if method == "byol":
        values["momentum"] = [0.9, 1.0]
    values.update(overrides)
    return values


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny ellipse-lung cache of the MIM tests."""
    return build_tiny_cache(tmp_path_factory.mktemp("cache"))


def build_phantom_cache(root: Path, n_images: int = 96, size: int = 32) -> dict[str, Path]:
    """Prepared cache, split and validity of the project's chest-X-ray phantoms (all images for pretraining)."""
    phantoms = generate_dataset(PhantomSettings(n_images=n_images, image_size=size, seed=3))
    prepared = root / "prepared"
    prepared.mkdir(parents=True)
    np.save(prepared / "images.npy", phantoms["images"])
    np.save(prepared / "masks.npy", phantoms["masks"])
    ids = [f"ph{i:03d}" for i in range(n_images)]
    table = {"index": range(n_images), "id": ids, "label": phantoms["labels"], "group": ids}
    pd.DataFrame(table | {"source": "phantom", "view": "PA", "has_mask": 1, "report": ""}).to_csv(
        prepared / "manifest.csv", index=False
    )
    split = root / "split.csv"
    pd.DataFrame(table | {"part": "train"}).to_csv(split, index=False)
    validity = root / "validity.npz"
    run_patch_validity(prepared, {"patch_size": 8, "threshold": 0.0, "no_mask_policy": "fail", "n_figure_images": 1},
                       validity, root / "validity.csv", root / "validity.png")  # fmt: skip
    return {"prepared": prepared, "split": split, "validity": validity}


def run(cache: dict[str, Path], out: Path, method: str, encoder: dict = SMALL_RESNET, **kwargs: object):
    """Pretrain in-process -> (result, the built JointEmbedding)."""
    values = kwargs.pop("settings", None) or settings(method)
    result = run_pretraining(cache["prepared"], cache["split"], cache["validity"], method, None, encoder, values, out,
                             **kwargs)  # fmt: skip
    return result, result.method


@pytest.mark.parametrize("method", ["simsiam", "byol"])
def test_each_method_trains_and_exports_a_strict_timm_backbone(
    cache: dict[str, Path], tmp_path: Path, method: str
) -> None:
    result, joint = run(cache, tmp_path, method, settings=settings(method, epochs=2))
    assert result.finished and result.epochs_run == 2
    history = pd.read_csv(tmp_path / "history.csv")
    assert list(history.columns) == [
        "epoch",
        "loss",
        "lr",
        "images_per_s",
        "embedding_std",
        "embedding_std_ratio",
        "seconds",
    ]
    assert np.isfinite(history["loss"]).all() and history["loss"].between(-1, 1).all()
    # Not collapsed: normalised embeddings spread, std x sqrt(d) well above 0 (1 for a uniform spread).
    assert (history["embedding_std_ratio"] > 0.1).all()
    assert not (tmp_path / "checkpoint.pt").exists()
    meta = read_encoder_metadata(tmp_path / "encoder.safetensors")
    backbone = timm.create_model(meta["timm_name"], pretrained=False, **meta["timm_kwargs"])
    state = load_file(tmp_path / "encoder.safetensors")
    backbone.load_state_dict(state, strict=True)  # every tensor, nothing else (no heads, no momentum copy)
    assert all(torch.equal(state[k], v) for k, v in joint.backbone.state_dict().items())
    # Fine-tuning takes it as an initialisation like any other pretrained run.
    init = parse_init(f"{method}_resnet10t_s0")
    model, _ = build_model(
        init, SMALL_RESNET, str(tmp_path / "encoder.safetensors"), 32, 8, num_classes=2, drop_path=0.0
    )
    assert torch.equal(model.state_dict()["conv1.0.weight"], state["conv1.0.weight"])


def test_byol_target_follows_the_online_network(cache: dict[str, Path], tmp_path: Path) -> None:
    _, joint = run(cache, tmp_path, "byol", settings=settings("byol", epochs=2))
    seed_everything(0)  # run_pretraining seeds, then builds the backbone first: these are its initial weights
    initial = create_encoder(SMALL_RESNET, 32, 8).state_dict()["conv1.0.weight"]
    online = joint.model.backbone.state_dict()["conv1.0.weight"]
    target = joint.model.backbone_momentum.state_dict()["conv1.0.weight"]
    assert not any(p.requires_grad for p in joint.model.backbone_momentum.parameters())
    assert not torch.equal(target, initial)  # the EMA moved the target ...
    assert not torch.equal(target, online)  # ... but it lags behind the online network
    assert (target - initial).norm() < (online - initial).norm()


def test_vit_backbone_works_too(cache: dict[str, Path], tmp_path: Path) -> None:
    result, _ = run(cache, tmp_path, "simsiam", encoder=TINY_VIT, settings=settings("simsiam", epochs=1))
    assert result.finished
    meta = read_encoder_metadata(tmp_path / "encoder.safetensors")
    assert meta["timm_kwargs"]["patch_size"] == 8 and meta["timm_kwargs"]["img_size"] == 32
    model = timm.create_model(meta["timm_name"], **meta["timm_kwargs"])
    model.load_state_dict(load_file(tmp_path / "encoder.safetensors"), strict=True)


@pytest.mark.parametrize("method", ["simsiam", "byol"])
def test_loss_falls_on_phantoms(tmp_path: Path, method: str) -> None:
    phantoms = build_phantom_cache(tmp_path / "cache")
    values = settings(method, epochs=6, batch_size=16, effective_batch_size=16, base_lr=2.0e-2)
    result, _ = run(phantoms, tmp_path / "run", method, settings=values)
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0] - 0.1, losses
    assert min(row["embedding_std_ratio"] for row in result.history) > 0.1


def test_resumed_run_equals_an_uninterrupted_one(cache: dict[str, Path], tmp_path: Path) -> None:
    # BYOL: the momentum target and its schedule must resume exactly too.
    straight, _ = run(cache, tmp_path / "straight", "byol")
    stopped, _ = run(cache, tmp_path / "resumed", "byol", stop_after_epochs=1)
    assert not stopped.finished and not (tmp_path / "resumed" / "encoder.safetensors").exists()
    resumed, _ = run(cache, tmp_path / "resumed", "byol")
    assert resumed.finished and resumed.epochs_run == 2
    expected = load_file(tmp_path / "straight" / "encoder.safetensors")
    actual = load_file(tmp_path / "resumed" / "encoder.safetensors")
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    assert [row["loss"] for row in straight.history] == [row["loss"] for row in resumed.history]


def test_cli_writes_outputs_and_log(cache: dict[str, Path], tmp_path: Path) -> None:
    out, log = tmp_path / "simsiam_resnet10t_s2", tmp_path / "log.txt"
    code = pretrain_main(["--prepared", str(cache["prepared"]), "--split", str(cache["split"]), "--validity",
                 str(cache["validity"]), "--method", "simsiam", "--encoder", json.dumps(SMALL_RESNET),
                 "--settings", json.dumps(settings("simsiam", epochs=1)), "--seed", "2", "--out", str(out),
                 "--log-file", str(log)], family=JOINT)  # fmt: skip
    assert code == 0 and (out / "encoder.safetensors").exists() and (out / "history.csv").exists()
    text = log.read_text()
    assert "method simsiam" in text and "effective batch 16" in text and "embedding_std" in text


# --- two-view augmentation -------------------------------------------------------------------------------


def gradient_images(n: int = 16, size: int = 32) -> torch.Tensor:
    """Normalised images bright at the top, dark at the bottom, with a left-right ramp."""
    rows = torch.linspace(2.0, -2.0, size).view(size, 1)
    cols = torch.linspace(-0.5, 0.5, size).view(1, size)
    return (rows + cols).expand(n, 1, size, size).clone()


def test_views_are_deterministic_per_seed_and_differ_between_seeds() -> None:
    augment = ViewAugment.from_config({"hflip": True})
    images = gradient_images()
    first = two_views(images, augment, torch.Generator().manual_seed(5))
    again = two_views(images, augment, torch.Generator().manual_seed(5))
    other = two_views(images, augment, torch.Generator().manual_seed(6))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    assert not torch.equal(first[0], first[1])  # the two views of one image differ


def test_views_never_flip_vertically() -> None:
    augment = ViewAugment.from_config({"hflip": True, "rotation": 15, "crop_scale": [0.2, 1.0]})
    theta = crop_rotate_theta(4096, augment, torch.Generator().manual_seed(0))
    assert (theta[:, 1, 1] > 0).all()  # the vertical axis keeps its direction (rotation at most 15 degrees)
    assert (theta[:, 0, 0] < 0).any()  # while left-right flips do happen
    views = random_view(gradient_images(256), augment, torch.Generator().manual_seed(1))
    top, bottom = views[:, :, :8].mean(dim=(1, 2, 3)), views[:, :, -8:].mean(dim=(1, 2, 3))
    assert (top > bottom).all()


def test_views_stay_grey_change_intensity_and_blur() -> None:
    still = {"rotation": 0, "crop_scale": [1.0, 1.0], "crop_ratio": [1.0, 1.0]}
    images = gradient_images(8)
    toned = random_view(
        images, ViewAugment.from_config(still | {"blur_probability": 0.0}), torch.Generator().manual_seed(0)
    )
    assert toned.shape == images.shape  # one grey channel in, one out
    assert not torch.allclose(toned.mean(dim=(1, 2, 3)), images.mean(dim=(1, 2, 3)), atol=1e-3)  # brightness moved
    checker = ((torch.arange(32).view(32, 1) + torch.arange(32).view(1, 32)) % 2).float().expand(8, 1, 32, 32)
    flat = {"brightness": 0.0, "contrast": 0.0}
    sharp = random_view(checker, ViewAugment.from_config(still | flat | {"blur_probability": 0.0}), torch.Generator())
    blurred = random_view(
        checker,
        ViewAugment.from_config(still | flat | {"blur_probability": 1.0, "blur_sigma": [1.0, 1.5]}),
        torch.Generator(),
    )
    assert torch.allclose(sharp, checker, atol=1e-4)  # no crop, no rotation, no tone change: the identity
    assert (blurred.std(dim=(1, 2, 3)) < 0.2 * checker.std(dim=(1, 2, 3))).all()


def test_view_size_resizes_the_crop() -> None:
    views = random_view(gradient_images(4, 32), ViewAugment.from_config({"view_size": 16}), torch.Generator())
    assert views.shape == (4, 1, 16, 16)


def test_unknown_augment_key_is_named() -> None:
    with pytest.raises(ValueError, match="vflip"):
        ViewAugment.from_config({"vflip": True})
