"""SKD and Cross on the shared loop: falling loss on phantoms, loss parts in history, collapse detection, exact
resume, the relation loss, per-method settings keys, and their rows, colours and comparisons in the tables."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_config import explicit_keys
from test_contrastive import SMALL_RESNET, build_phantom_cache, run, settings
from test_host_sync import host_reads  # noqa: F401 (the fixture)
from test_pretrain import build_tiny_cache
from test_tables import fake_run

from cxrmim.analysis.figures import PALETTE, method_colour
from cxrmim.analysis.tables import write_tables
from cxrmim.config import DEFAULT_CONFIG, REPO_ROOT
from cxrmim.inits import parse_init
from cxrmim.models.joint_embedding import build_joint_embedding
from cxrmim.models.skd import off_diagonal, relation_distillation
from cxrmim.train.contrastive import JointEmbedding
from cxrmim.train.pretrain_data import load_pretrain_data

METHODS = ["skd", "cross"]
LOSS_TERMS = {"skd": ("regression_loss", "distill_loss"), "cross": ("cross_view_loss", "cross_model_loss")}
WEIGHT_KEY = {"skd": "distill_weight", "cross": "cross_model_weight"}


def method_settings(method: str, **overrides: object) -> dict:
    """The tiny `contrastive.<method>` section of test_contrastive with this method's own keys."""
    own = {
        "skd": {"temperature": 0.1, "teacher_temperature": 0.04, "distill_weight": 1.0},
        "cross": {"cross_model_weight": 1.0},
    }[method]
    return settings(method, momentum=[0.9, 1.0], **own, **overrides)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny ellipse-lung cache of the MIM tests."""
    return build_tiny_cache(tmp_path_factory.mktemp("cache"))


@pytest.mark.parametrize("method", METHODS)
def test_loss_falls_on_phantoms_and_history_has_its_parts(tmp_path: Path, method: str) -> None:
    phantoms = build_phantom_cache(tmp_path / "cache")
    values = method_settings(method, epochs=3, batch_size=16, effective_batch_size=16, base_lr=2.0e-2)
    result, _ = run(phantoms, tmp_path / "run", method, settings=values)
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0] - 0.1, losses
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    first, second = LOSS_TERMS[method]
    assert list(history.columns) == [
        "epoch",
        "loss",
        "lr",
        "images_per_s",
        "embedding_std",
        "embedding_std_ratio",
        first,
        second,
        "seconds",
    ]
    # The loss is the sum of its parts (weight 1), per image, epoch by epoch.
    assert history["loss"].to_numpy() == pytest.approx((history[first] + history[second]).to_numpy(), rel=1e-4)
    assert (history["embedding_std_ratio"] > 0.1).all()
    # The exported backbone is an init like any other.
    assert parse_init(f"{method}_resnet10t_s0").method == {"skd": "SKD", "cross": "Cross"}[method]


@pytest.mark.parametrize("method", METHODS)
def test_resumed_run_equals_an_uninterrupted_one(cache: dict[str, Path], tmp_path: Path, method: str) -> None:
    values = method_settings(method, epochs=2)
    straight, joint = run(cache, tmp_path / "straight", method, settings=values)
    stopped, _ = run(cache, tmp_path / "resumed", method, settings=values, stop_after_epochs=1)
    assert not stopped.finished
    resumed, _ = run(cache, tmp_path / "resumed", method, settings=values)
    assert resumed.finished and resumed.epochs_run == 1
    expected = load_file(tmp_path / "straight" / "encoder.safetensors")
    actual = load_file(tmp_path / "resumed" / "encoder.safetensors")
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    assert [row["loss"] for row in straight.history] == [row["loss"] for row in resumed.history]
    # The momentum target moved (it is in the checkpoint) but lags the online network.
    online, target = joint.model.backbone.state_dict(), joint.model.backbone_momentum.state_dict()
    assert not torch.equal(online["conv1.0.weight"], target["conv1.0.weight"])


class ConstantBackbone(torch.nn.Module):
    """A collapsed encoder: the same features for every image (gradients still flow through `bias`)."""

    num_features = 8

    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.randn(self.num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) -> (B, num_features), identical rows."""
        return self.bias.expand(x.shape[0], -1) + 0 * x.mean()


@pytest.mark.parametrize("method", METHODS)
def test_a_collapsed_embedding_is_detected(
    cache: dict[str, Path], method: str, caplog: pytest.LogCaptureFixture
) -> None:
    values = method_settings(method)
    model = build_joint_embedding(method, ConstantBackbone(), values)
    loss, stats = model(torch.randn(8, 1, 16, 16), torch.randn(8, 1, 16, 16))
    assert torch.isfinite(loss) and float(stats["embedding_std"]) == pytest.approx(0.0, abs=1e-6)
    joint = JointEmbedding(
        load_pretrain_data(cache["prepared"], cache["split"], cache["validity"]), method, SMALL_RESNET, values
    )
    healthy = {"embedding_std": 8 * 16**-0.5, LOSS_TERMS[method][0]: 0.0, LOSS_TERMS[method][1]: 0.0}
    with caplog.at_level(logging.WARNING, logger="cxrmim.pretrain"):
        assert joint.epoch_columns(healthy, 8)["embedding_std_ratio"] == pytest.approx(1.0)
        assert not caplog.records
        collapsed = joint.epoch_columns(healthy | {"embedding_std": float(stats["embedding_std"])}, 8)
    assert collapsed["embedding_std_ratio"] < 0.05
    assert "collapsed" in caplog.text and method in caplog.text


def test_relation_distillation_is_zero_for_the_teacher_itself_and_trains_only_the_student() -> None:
    teacher = torch.randn(6, 5)
    assert float(relation_distillation(teacher, teacher, 0.1, 0.1)) == pytest.approx(0.0, abs=1e-6)
    student = torch.randn(6, 5, requires_grad=True)
    teacher.requires_grad_(True)
    loss = relation_distillation(student, teacher, 0.1, 0.04)
    loss.backward()
    assert float(loss.detach()) > 0 and student.grad.abs().sum() > 0 and teacher.grad is None
    matrix = torch.arange(16.0).view(4, 4)
    assert off_diagonal(matrix).tolist() == [[1, 2, 3], [4, 6, 7], [8, 9, 11], [12, 13, 14]]


def test_a_key_of_another_method_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"contrastive.simsiam has \['temperature'\]"):
        build_joint_embedding("simsiam", ConstantBackbone(), settings("simsiam", temperature=0.1))
    with pytest.raises(ValueError, match="cross_model_weight"):
        build_joint_embedding("skd", ConstantBackbone(), method_settings("skd", cross_model_weight=1.0))


@pytest.mark.parametrize("method", METHODS)
def test_configs_state_the_method_and_run_it(method: str) -> None:
    default = yaml.safe_load(DEFAULT_CONFIG.read_text())
    paper = yaml.safe_load((REPO_ROOT / "configs" / "paper.yaml").read_text())
    for config in (default, paper):
        assert method in config["contrastive"]["methods"] and method in config["finetune"]["inits"]
        assert WEIGHT_KEY[method] in config["contrastive"][method]
        assert config["contrastive"][method]["augment"]["hflip"]  # RGMIM: flipping (left-right; never vertical)
    assert default["contrastive"]["encoders"] == ["resnet10t-half"] and paper["contrastive"]["encoders"] == ["resnet50"]
    # Merged-config rule: the paper run inherits nothing of this method's CPU recipe unseen.
    missing = explicit_keys(default["contrastive"][method]) - explicit_keys(paper["contrastive"][method])
    assert not missing, f"configs/paper.yaml contrastive.{method} inherits {sorted(missing)}"


def test_table_2_rows_comparisons_and_colours(tmp_path: Path) -> None:
    runs = {
        ("rgmim_r0.75_vit-t", "RGMIM", "ViT", 0.75): 0.9,
        ("byol_resnet10t-half", "BYOL", "resnet10t-half", None): 0.7,
        ("cross_resnet10t-half", "Cross", "resnet10t-half", None): 0.75,
        ("skd_resnet10t-half", "SKD", "resnet10t-half", None): 0.8,
        ("scratch_resnet10t-half", "From Scratch", "resnet10t-half", None): 0.5,
    }
    paths = [
        fake_run(
            tmp_path / "ft",
            family,
            method,
            arch,
            ratio,
            1.0,
            None if family.startswith("scratch") else 0,
            seed,
            accuracy,
        )
        for (family, method, arch, ratio), accuracy in runs.items()
        for seed in (0, 1)
    ]
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    sections = {
        k: config[k]
        for k in ("encoders", "pretrain", "finetune", "patch_validity", "prepare", "label_fractions", "split")
    }
    write_tables(paths, sections, tmp_path / "tables", {"bootstrap_samples": 50, "seed": 0}, [])
    long = pd.read_csv(tmp_path / "tables" / "label_fractions.csv")
    assert long["method"].drop_duplicates().tolist() == ["RGMIM", "SKD", "Cross", "BYOL", "From Scratch"]  # paper order
    comparisons = set(pd.read_csv(tmp_path / "tables" / "significance.csv")["comparison"])
    assert {"RGMIM (ViT) vs SKD (resnet10t-half)", "RGMIM (ViT) vs Cross (resnet10t-half)"} <= comparisons
    colours = {method_colour(m) for m in PALETTE if m not in {"SKD", "Cross"}}
    assert method_colour("SKD") not in colours and method_colour("Cross") not in colours
    assert method_colour("SKD") != method_colour("Cross")


@pytest.mark.parametrize("method", METHODS)
def test_a_training_step_reads_nothing_back_to_the_host(host_reads, method: str) -> None:  # noqa: F811
    """Forward, backward and the momentum update stay on the device (on a GPU: no sync inside a step)."""
    backbone = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    backbone.num_features = 4
    model = build_joint_embedding(method, backbone, method_settings(method))
    for step in range(1, 4):
        loss, _ = model(torch.randn(6, 1, 12, 12), torch.randn(6, 1, 12, 12))
        loss.backward()
        model.momentum_update(step, 3)
    assert not host_reads, host_reads
