"""Datasets by name (cxrmim.experiment, cxrmim.plan): views, corpora, evaluation datasets and the checks that
refuse an experiment before any job runs. Torch-free and fast: no Snakemake here (tests/test_workflow_transfer.py
runs the DAG)."""

from __future__ import annotations

import pytest

from cxrmim.config import load_config, merge
from cxrmim.experiment import Experiment
from cxrmim.plan import Plan, check

DEFAULT = load_config()


def config(**sections) -> dict:
    """The default config with `sections` merged over it."""
    return merge(DEFAULT, sections)


def one_dataset(**sections) -> dict:
    """A one-dataset config: the default with dataset.name set."""
    return config(dataset={"name": "solo"}, **sections)


def test_default_is_an_experiment_with_a_corpus_and_three_evaluation_datasets():
    plan = Plan(DEFAULT)
    assert not plan.experiment.single and plan.experiment.name == "transfer"
    assert plan.corpora == ["phantoms"] and plan.evaluated == ["phantoms", "hospital_b", "lesions"]
    assert plan.view("lesions")["dataset"]["task"] == "segmentation"
    assert plan.budgets("lesions") == ["frac0.1", "frac1"] and plan.budgets("hospital_b") == plan.budgets("phantoms")
    corpus, other = plan.view("phantoms")["dataset"], plan.view("hospital_b")["dataset"]
    # Each entry is merged over `dataset`: its own keys win, the rest are the shared defaults.
    assert corpus["name"] == "phantoms" and corpus["synthetic"]["multi_finding"] is True
    assert corpus["synthetic"]["n_images"] == DEFAULT["dataset"]["synthetic"]["n_images"]
    assert other["synthetic"]["seed"] != corpus["synthetic"]["seed"] and other["task"] == "multiclass"
    assert other["synthetic"]["lesion_contrast"] == DEFAULT["dataset"]["synthetic"]["lesion_contrast"]
    assert "datasets" not in plan.view("phantoms") and "experiment" not in plan.view("phantoms")
    check(DEFAULT)


def test_one_dataset_config_is_its_own_corpus_and_evaluation_dataset():
    plan = Plan(one_dataset())
    assert plan.experiment.single and plan.corpora == plan.evaluated == ["solo"] and plan.experiment.name == "solo"
    view = plan.view("solo")
    # The one-dataset view is the config itself (less the experiment keys): the stages see what they saw before.
    assert view == {k: v for k, v in one_dataset().items() if k not in ("datasets", "experiment")}
    assert plan.corpus_of("mae_r0.75_vit-cpu_s0") == "solo"


def test_entries_bring_their_own_split_and_label_budgets():
    cfg = config(datasets={"hospital_b": {"split": {"test_fraction": 0.5}, "label_fractions": {"fractions": [1.0]}}})
    plan = Plan(cfg)
    view = plan.view("hospital_b")
    assert view["split"]["test_fraction"] == 0.5 and view["split"]["seed"] == DEFAULT["split"]["seed"]
    assert plan.budgets("hospital_b") == ["frac1"] and plan.budgets("phantoms") == ["frac0.01", "frac1"]
    # Every init is fine-tuned on each evaluation dataset at that dataset's budgets (one seed each by default).
    inits = len(plan.main_inits)
    assert len(plan.finetune_runs("hospital_b")) == inits
    assert len(plan.finetune_runs("phantoms")) == inits * 2
    assert plan.view("phantoms")["split"] == DEFAULT["split"]


def test_unused_entries_cost_nothing_and_contrastive_corpus_is_its_own():
    cfg = config(
        datasets={"spare": {"kind": "manifest", "source": "/nowhere/manifest.csv"}},
        experiment={"contrastive_corpus": "hospital_b"},
    )
    plan = Plan(cfg)
    assert "spare" not in plan.datasets  # never read, never checked (its source does not exist)
    assert plan.corpora == ["phantoms", "hospital_b"]
    assert plan.corpus_of("byol_resnet10t-half_s0") == "hospital_b"
    assert plan.corpus_of("mrm_r0.75_vit-cpu_s0") == "phantoms"
    assert plan.methods_on("hospital_b") == DEFAULT["contrastive"]["methods"]
    check(cfg)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"experiment": {"corpus": "nope"}}, "experiment.corpus is 'nope', not a `datasets` entry"),
        ({"experiment": {"evaluate": ["phantoms", "nope"]}}, "experiment.evaluate lists ['nope']"),
        ({"experiment": {"name": "phantoms"}}, "experiment.name 'phantoms' is also a dataset's name"),
        ({"experiment": {"contrastive_corpus": "x"}}, "experiment.contrastive_corpus is 'x'"),
        ({"datasets": {"hospital_b": {"tsk": "binary"}}}, "datasets.hospital_b"),
        ({"datasets": {"hospital_b": {"label_fractions": {"fractions": []}}}}, "label_fractions has no budget"),
        ({"datasets": {"hospital_b": {"covid_task": "viral"}}}, "does not read it"),
    ],
)
def test_experiments_that_do_not_resolve_are_refused_with_the_fix(change, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check(config(**change))


def test_report_methods_on_a_report_less_corpus_are_refused_naming_corpus_and_methods():
    report_less = {"kind": "covid19_radiography", "source": "/data/COVID-19_Radiography_Dataset"}
    cfg = config(datasets={"kaggle": report_less}, experiment={"corpus": "kaggle", "evaluate": ["phantoms"]})
    with pytest.raises(ValueError, match=r"mrm, medim learn from report text, but dataset 'kaggle' has no reports"):
        check(cfg)
    # Evaluating on a report-less dataset is fine: only the corpus must have reports.
    fine = config(datasets={"kaggle": report_less}, experiment={"evaluate": ["phantoms", "kaggle"]})
    assert Experiment(fine).evaluated == ["phantoms", "kaggle"]


def test_empty_datasets_without_a_name_is_refused():
    cfg = merge(DEFAULT, {"datasets": None})
    with pytest.raises(ValueError, match="dataset.name is null"):
        check(cfg)
