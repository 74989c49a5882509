"""configs/mrm_protocol.yaml as a whole DAG: on fake layouts of its six sources, a dry run plans every job where
the protocol says (the corpus's stages once, each evaluation dataset's own split and fine-tunes, the summary)."""

from __future__ import annotations

import re

import pytest
import yaml
from conftest import REPO, snakemake
from test_dataset_kinds import covid_tree, kaggle_tree, rsna_tree
from test_public import chexpert_tree, mimic_tree, nih_tree

PROTOCOL = REPO / "configs" / "mrm_protocol.yaml"
EVALUATED = ("chexpert", "nih", "rsna", "ieee_covid", "ieee_viral")


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> str:
    """`snakemake -n -p` of the protocol with every source pointed at a fake tree of its layout."""
    root = tmp_path_factory.mktemp("protocol")
    covid = covid_tree(root / "ieee", flat=False)
    sources = {
        "mimic": mimic_tree(root / "mimic"),
        "chexpert": chexpert_tree(root / "chexpert"),
        "nih": nih_tree(root / "nih"),
        "rsna": rsna_tree(root / "rsna"),
        "ieee_covid": covid,
        "ieee_viral": covid,
    }
    kaggle = str(kaggle_tree(root / "kaggle"))
    override = {
        "datasets": {name: {"source": str(path)} for name, path in sources.items()}
        | {
            "mimic": {
                "source": str(sources["mimic"]),
                "lung_masks": {"train_sources": [{"kind": "covid19_radiography", "source": kaggle}]},
            }
        },  # fmt: skip
        "lung_masks": {"train_sources": [{"kind": "covid19_radiography", "source": kaggle}]},
    }
    (root / "fake_sources.yaml").write_text(yaml.safe_dump(override))
    result = snakemake(root, "-n", "-p", configs=(PROTOCOL, root / "fake_sources.yaml"))
    return result.stdout


def jobs(out: str) -> dict[str, int]:
    """Job counts of the dry run's stats table."""
    table = out.split("Job stats:")[1].split("total")[0]
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


def test_every_stage_runs_where_the_protocol_says(planned: str):
    counts = jobs(planned)
    config = yaml.safe_load(PROTOCOL.read_text())
    inits, seeds = len(config["finetune"]["inits"]), len(config["label_fractions"]["seeds"])
    # Data stages once per dataset; the corpus's masks, validity, tokenizer and pretrainings once, on MIMIC only.
    assert counts["download"] == counts["prepare"] == counts["split"] == 6, counts
    assert counts["train_segmenter"] == counts["lung_masks"] == counts["patch_validity"] == counts["tokenizer"] == 1
    assert counts["pretrain"] == len(config["pretrain"]["methods"])
    assert counts["finetune"] == len(EVALUATED) * inits * 3 * seeds, counts
    assert counts["tables"] == counts["report"] == len(EVALUATED) and counts["experiment_report"] == 1
    pretrain_outputs = re.findall(r"output: (results/[^/]+)/pretrain/", planned)
    assert pretrain_outputs and set(pretrain_outputs) == {"results/mimic"}
    finetunes = set(re.findall(r"output: results/([^/]+)/finetune/", planned))
    assert finetunes == set(EVALUATED)  # MIMIC is the corpus, not evaluated


def test_split_settings_follow_each_protocol(planned: str):
    commands = [line for line in planned.splitlines() if "scripts/split.py --manifest" in line]
    chexpert = next(c for c in commands if "results/chexpert/" in c)
    nih = next(c for c in commands if "results/nih/" in c)
    assert '"val_count": 5000' in chexpert and '"use_official": true' in chexpert
    assert '"test_fraction": 0.2' in nih and '"val_fraction": 0.125' in nih and '"use_official": false' in nih
    # The two COVID-collection tasks are two datasets on one source, each with its own labels.
    prepares = [line for line in planned.splitlines() if "scripts/prepare.py --marker" in line]
    assert any('"covid_task": "covid"' in p and "results/ieee_covid/" in p for p in prepares)
    assert any('"covid_task": "viral"' in p and "results/ieee_viral/" in p for p in prepares)
