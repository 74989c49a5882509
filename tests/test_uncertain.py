"""Per-finding uncertain-label policies (dataset.uncertain as a mapping) on a fake CheXpert-like label table."""

from pathlib import Path

import pandas as pd
import pytest

from cxrmim.config import load_config, validate_config
from cxrmim.data.public import CHEXPERT_FINDINGS, public_records
from cxrmim.data.records import source_records
from cxrmim.data.sources import SourceError
from cxrmim.data.tasks import UNCERTAIN, label_matrix
from cxrmim.data.uncertain import check_uncertain, finding_policies
from cxrmim.plan import check

FIVE = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
MRM = {"Atelectasis": "ones", "Edema": "ones", "Pleural Effusion": "ones", "Cardiomegaly": "zeros",
       "Consolidation": "zeros"}  # fmt: skip
# Rows of the five findings in FIVE order ("" = blank), plus Lung Opacity: -1 in the second row.
ROWS = [
    ["-1.0", "-1.0", "-1.0", "-1.0", "-1.0"],
    ["", "1.0", "", "0.0", ""],
    ["0.0", "-1.0", "1.0", "", "-1.0"],
]


def label_tree(root: Path) -> Path:
    """CheXpert-v1.0-small/train.csv with ROWS (one patient each) and empty image files (nothing decodes them)."""
    base = root / "CheXpert-v1.0-small"
    rows = []
    for i, values in enumerate(ROWS):
        rel = f"CheXpert-v1.0-small/train/patient{i:05d}/study1/view1_frontal.jpg"
        (root / rel).parent.mkdir(parents=True)
        (root / rel).touch()
        row = {"Path": rel, "Frontal/Lateral": "Frontal", "AP/PA": "PA", **dict.fromkeys(CHEXPERT_FINDINGS, "")}
        row.update(zip(FIVE, values))
        row["Lung Opacity"] = "-1.0" if i == 1 else ""
        rows.append(row)
    pd.DataFrame(rows).to_csv(base / "train.csv", index=False)
    return root


def test_finding_policies_one_for_all_a_mapping_its_default_and_errors():
    assert finding_policies("zeros", FIVE) == dict.fromkeys(FIVE, "zeros")
    assert finding_policies({"Edema": "ones"}, FIVE) == {**dict.fromkeys(FIVE, "ignore"), "Edema": "ones"}
    assert finding_policies({"Edema": "ones", "*": "zeros"}, FIVE) == {**dict.fromkeys(FIVE, "zeros"), "Edema": "ones"}
    with pytest.raises(ValueError, match=r"dataset.uncertain names \['Lung Opacity'\], which the task does not have"):
        finding_policies({"Edema": "ones", "Lung Opacity": "ones"}, FIVE)
    with pytest.raises(ValueError, match=r"dataset.uncertain.Edema is 'maybe'; use one of"):
        finding_policies({"Edema": "maybe"}, FIVE)
    with pytest.raises(ValueError, match=r"dataset.uncertain is 'u-ones'"):
        finding_policies("u-ones", FIVE)


def test_mrm_policy_gives_u_ones_u_zeros_and_blank_negative(tmp_path: Path):
    root = label_tree(tmp_path)
    records, _ = public_records("chexpert", root, MRM)
    assert records[1].uncertain == ("Lung Opacity",)  # not named, no "*": ignore, at the reader's 13 findings
    dataset = {"name": "cx", "kind": "chexpert", "task": "multilabel", "findings": FIVE, "uncertain": MRM}
    records, _, _ = source_records("chexpert", root, dataset)
    assert [r.label for r in records] == ["Atelectasis|Edema|Pleural Effusion", "Cardiomegaly",
                                          "Consolidation|Pleural Effusion"]  # fmt: skip
    matrix = label_matrix([r.label for r in records], FIVE, [r.uncertain for r in records])
    assert matrix.tolist() == [[1, 0, 0, 1, 1], [0, 1, 0, 0, 0], [0, 0, 1, 0, 1]]  # no 255 left: every -1 decided


def test_partial_mapping_leaves_the_rest_uncertain(tmp_path: Path):
    root = label_tree(tmp_path)
    dataset = {"name": "cx", "kind": "chexpert", "task": "multilabel", "findings": FIVE, "uncertain": {"Edema": "ones"}}
    records, _, _ = source_records("chexpert", root, dataset)
    matrix = label_matrix([r.label for r in records], FIVE, [r.uncertain for r in records])
    u = UNCERTAIN
    assert matrix.tolist() == [[u, u, u, 1, u], [0, 1, 0, 0, 0], [0, u, 1, 0, u]]
    with pytest.raises(SourceError, match="dataset.uncertain names"):
        public_records("chexpert", root, {"Edemas": "ones"})


def test_a_mapping_naming_a_finding_outside_the_task_is_refused_before_any_job():
    config = load_config()
    dataset = {**config["dataset"], "name": "cx", "kind": "chexpert", "task": "multilabel", "findings": FIVE}
    mapping = {**MRM, "Lung Opacity": "ones"}  # a CheXpert finding, but not one of the task's five
    validate_config({**config, "dataset": {**dataset, "uncertain": mapping}})  # the schema takes any mapping
    with pytest.raises(ValueError, match=r"dataset.uncertain names \['Lung Opacity'\]"):
        check({**config, "dataset": {**dataset, "uncertain": mapping}})
    check_uncertain({**dataset, "task": "binary", "uncertain": mapping})  # all 13 findings count then
    with pytest.raises(ValueError, match="dataset.uncertain"):
        validate_config({**config, "dataset": {**dataset, "uncertain": {"Edema": "sometimes"}}})
    rsna = {**config["dataset"], "name": "rsna", "kind": "rsna_pneumonia", "uncertain": {"Edema": "ones"}}
    with pytest.raises(ValueError, match=r"dataset.uncertain set, but kind rsna_pneumonia does not read it"):
        check({**config, "dataset": rsna})
