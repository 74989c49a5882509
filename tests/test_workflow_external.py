"""Published encoders through the workflow's fine-tune rule (every format, two with their own recipes), and the
MAE-vs-ResNet study's commented ImageNet ResNet-18 entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import yaml
from conftest import REPO, snakemake
from external_checkpoints import ENCODERS, write_all
from safetensors.torch import save_file

from cxrmim.analysis.hyperparameters import hyperparameter_table
from cxrmim.analysis.runs import load_runs
from cxrmim.inits import parse_init
from cxrmim.train.finetune import build_model

pytestmark = pytest.mark.slow

RECIPES = {  # MRM's NIH scripts: SGD, clipping at 1; medical_mae: AdamW, layer decay 0.55, RandAugment
    "mrm-sgd": {
        "inits": ["external_mrm"],
        "optimizer": "sgd",
        "momentum": 0.9,
        "weight_decay": 0.0,
        "layer_decay": 1.0,
        "base_lr": 0.05,
        "schedule": "step",
        "lr_steps": {"milestones": [0.5], "gamma": 0.1},
        "clip_grad": 1.0,
    },
    "medical-mae": {
        "inits": ["external_medical-mae"],
        "layer_decay": 0.55,
        "drop_path": 0.2,
        "current_preset": "randaugment",
    },
}


def test_every_external_format_fine_tunes_through_the_rule(tmp_path: Path):
    entries = write_all(tmp_path / "weights")
    override = tmp_path / "external.yaml"
    override.write_text(
        yaml.safe_dump(
            {
                "encoders": ENCODERS,
                "external_inits": entries,
                "label_fractions": {"fractions": [1.0], "seeds": [0]},
                "finetune": {
                    "inits": [f"external_{key}" for key in entries],
                    "epochs": 1,
                    "min_steps": 2,
                    "recipes": RECIPES,
                },
            }
        )
    )
    results = tmp_path / "results" / "tiny" / "finetune"
    targets = [f"results/tiny/finetune/external_{key}/frac1_seed0/metrics.json" for key in entries]
    snakemake(tmp_path, *targets, configs=(REPO / "tests" / "configs" / "tiny.yaml", override))

    metrics = {
        key: json.loads((results / f"external_{key}" / "frac1_seed0" / "metrics.json").read_text()) for key in entries
    }
    assert metrics["mrm"]["method"] == "MRM (released)" and metrics["fair-mae"]["method"] == "fair-mae"
    assert metrics["mrm"]["input_norm"] == {"mean": [0.4978], "std": [0.2449]}
    assert metrics["xrv"]["input_norm"]["std"] == [pytest.approx(1 / 2048)]
    assert metrics["mrm"]["external"]["format"] == "mrm" and metrics["mrm"]["external"]["pool"] == "avg-fcnorm"
    assert (metrics["mrm"]["recipe"], metrics["mrm"]["optimizer"], metrics["mrm"]["schedule"]) == (
        "mrm-sgd",
        "sgd",
        "step",
    )
    assert metrics["medical-mae"]["recipe"] == "medical-mae" and metrics["medical-mae"]["augment"] == "current"
    assert metrics["medical-mae"]["augment_applied"] == "randaugment"
    assert {metrics[k]["recipe"] for k in entries if k not in ("mrm", "medical-mae")} == {"default"}
    log = (tmp_path / "results" / "tiny" / "logs" / "finetune" / "external_mrm" / "frac1_seed0.log").read_text()
    assert "loaded strictly" in log and "sgd step" in log

    config = yaml.safe_load((REPO / "workflow_config.yaml").read_text())
    config["finetune"] |= {"inits": [f"external_{key}" for key in entries], "recipes": RECIPES}
    table = hyperparameter_table(config, load_runs((results).glob("*/frac1_seed0/metrics.json")))
    rows = table.set_index("Hyperparameter")["Fine-tuning"]
    assert "optimizer sgd" in rows["Recipe mrm-sgd: external_mrm"]
    assert rows["External init MRM (released) (external_mrm)"].startswith("mrm MRM.pth as vit-ext, pool avg-fcnorm")


def test_study_config_gains_the_imagenet_resnet18_by_uncommenting(tmp_path: Path):
    """The MAE-vs-ResNet study's commented ImageNet ResNet-18: uncommented with a local file, it plans and loads."""
    weights = tmp_path / "resnet18.safetensors"
    model = timm.create_model("resnet18", pretrained=False)  # timm's ImageNet layout: 3-channel stem, 1000-way fc
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    lines, text = [], (REPO / "configs" / "mae_vs_resnet.yaml").read_text()
    for line in text.splitlines():
        if line.startswith("  # inits:"):
            lines = [x for x in lines if not x.startswith("  inits:")]  # the active line the comment replaces
        if line.startswith(("  # inits:", "  # imagenet_weights:")):
            line = line.replace("  # ", "  ", 1)
        lines.append(line)
    config = yaml.safe_load("\n".join(lines))
    assert config["finetune"]["inits"] == ["mae", "scratch_resnet18", "imagenet_resnet18"]
    config["finetune"]["imagenet_weights"]["resnet18"] = str(weights)
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(config))
    plan = snakemake(tmp_path, "-n", configs=(study,)).stdout
    assert "imagenet_resnet18/n100_seed0_full-native" in plan and "imagenet_resnet18/n1000_seed1_full-none" in plan
    spec = parse_init("imagenet_resnet18")
    model, norm = build_model(spec, config["encoders"]["resnet18"], str(weights), 32, 16, 2, 0.0)
    assert model.conv1.weight.shape[1] == 1 and norm.mean == pytest.approx(0.449, abs=1e-3)
