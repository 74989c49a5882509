"""The bad-input battery of docs/data-checks.md: every case gives its documented error, skip count or result."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_bad_inputs import texture
from test_public import nih_tree

from cxrmim.config import load_config, validate_config
from cxrmim.data.prepare import prepare
from cxrmim.data.readers import read_grey
from cxrmim.data.sources import SourceError, manifest_records

SETTINGS = {"image_size": 32, "on_bad_image": "skip", "workers": 1, "min_image_side": 16}


def images_in(folder: Path, n: int, start: int = 0) -> list[str]:
    """Write n distinct PNGs into folder; return their names."""
    names = [f"img{i}.png" for i in range(start, start + n)]
    for i, name in zip(range(start, start + n), names):
        Image.fromarray(texture(i)).save(folder / name)
    return names


def manifest(folder: Path, text: str, name: str = "manifest.csv", encoding: str = "utf-8") -> Path:
    """Write a manifest's text and its download marker; return the marker."""
    (folder / name).write_bytes(text.encode(encoding))
    marker = folder / "source.json"
    marker.write_text(json.dumps({"root": str(folder / name)}))
    return marker


def run(folder: Path, marker: Path, dataset: dict | None = None, **settings) -> dict:
    """prepare() into folder/out with a manifest dataset section."""
    section = {"name": "chk", "kind": "manifest", **(dataset or {})}
    return prepare(marker, section, {**SETTINGS, **settings}, folder / "out")


def rows(names: list[str], labels: str) -> str:
    """CSV lines 'name,label' for names and the label letters."""
    return "".join(f"{n},{lab}\n" for n, lab in zip(names, labels))


# ----------------------------------------------------------------------------- silent wrong results


@pytest.mark.parametrize(
    "header, needle",
    [
        ("image,label,label", r"repeats a column: 'label' \(column 2\) and 'label' \(column 3\)"),
        ("image,Label,label ", r"repeats a column: 'Label' \(column 2\) and 'label' \(column 3\)"),
        ("image,path,label", r"columns 'image', 'path' all name the image"),
        ("image,label,patient_id,Patient ID", r"repeats a column: 'patient_id' \(column 3\) and 'Patient ID'"),
    ],
)
def test_repeated_column_is_an_error_naming_it_and_the_file(tmp_path, header, needle):
    names = images_in(tmp_path, 2)
    extra = "," * (header.count(",") - 1)
    manifest(tmp_path, header + "\n" + "".join(f"{n},A{extra}\n" for n in names))
    with pytest.raises(SourceError, match=r"manifest\.csv: .*" + needle):
        manifest_records(tmp_path / "manifest.csv")


def test_unused_columns_even_repeated_are_reported_not_fatal(tmp_path):
    names = images_in(tmp_path, 4)
    marker = manifest(
        tmp_path, "image,label,notes,Notes\n" + "".join(f"{n},{lab},x,y\n" for n, lab in zip(names, "ABAB"))
    )
    summary = run(tmp_path, marker)
    assert summary["seen"]["columns"]["Notes"].startswith("ignored")
    assert any("manifest columns ['notes', 'Notes'] are not used" in w for w in summary["warnings"])


@pytest.mark.parametrize("dataset", [{}, {"label_map": {"*": "Finding"}}])
def test_one_class_is_refused(tmp_path, dataset):
    names = images_in(tmp_path, 4)
    marker = manifest(tmp_path, "image,label\n" + rows(names, "AABB" if dataset else "AAAA"))
    with pytest.raises(ValueError, match=r"at least two classes.*'\*' key merges all"):
        run(tmp_path, marker, dataset)
    assert not (tmp_path / "out" / "images.npy").exists()


def test_blank_image_is_a_counted_skip_with_a_warning(tmp_path, caplog):
    names = images_in(tmp_path, 4)
    Image.fromarray(np.zeros((64, 64), np.uint16)).save(tmp_path / "blank.png")  # an all-zero 16-bit export
    marker = manifest(tmp_path, "image,label\n" + rows(names + ["blank.png"], "ABABA"))
    with caplog.at_level(logging.WARNING):
        summary = run(tmp_path, marker)
    assert summary["n_skipped_bad"] == 1 and summary["n_images"] == 4
    assert "manifest row 5" in caplog.text and "every pixel has the same value" in caplog.text
    with pytest.raises(ValueError, match="every pixel has the same value"):
        run(tmp_path, marker, on_bad_image="fail")


def test_exif_orientation_is_applied(tmp_path):
    shown = np.zeros((40, 60), np.uint8)
    shown[:10, :20] = 255  # bright top-left corner as a viewer shows it
    stored = np.rot90(shown, k=1)  # Orientation 6: the viewer turns it 90 degrees clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(stored)).save(tmp_path / "rot.jpg", quality=95, exif=exif)
    grey = read_grey(tmp_path / "rot.jpg")
    assert grey.shape == shown.shape
    assert grey[:10, :20].mean() > 0.9 and grey[30:, 40:].mean() < 0.1


def test_two_candidate_label_files_are_an_error_and_the_one_used_is_named(tmp_path):
    from cxrmim.data.acquire import acquire

    root = nih_tree(tmp_path / "nih")
    dataset = {
        "name": "nih",
        "kind": "nih_cxr14",
        "source": str(root),
        "task": "multilabel",
        "findings": ["Effusion", "Hernia"],
    }
    info = acquire(dataset, tmp_path / "raw", tmp_path / "source.json")
    assert info["label_files"]["labels"] == "Data_Entry_2017_v2020.csv"
    assert json.loads((tmp_path / "source.json").read_text())["label_files"]["test"] == "test_list.txt"
    summary = prepare(tmp_path / "source.json", dataset, SETTINGS, tmp_path / "out")
    assert summary["seen"]["label_files"]["labels"] == "Data_Entry_2017_v2020.csv"
    assert summary["seen"]["findings"]["Hernia"]["became"] == "kept"
    assert summary["seen"]["findings"]["Atelectasis"]["became"].startswith("ignored")
    with pytest.raises(ValueError, match=r"spell findings differently \(spelling differs: 'Effusion' / 'effusion'\)"):
        prepare(tmp_path / "source.json", {**dataset, "findings": ["effusion", "Hernia"]}, SETTINGS, tmp_path / "o2")
    (root / "Data_Entry_2017.csv").write_text((root / "Data_Entry_2017_v2020.csv").read_text())
    with pytest.raises(
        SourceError,
        match=r"several files could be the Data_Entry_2017\.csv: Data_Entry_2017\.csv, "
        r"Data_Entry_2017_v2020\.csv; keep the one",
    ):
        acquire(dataset, tmp_path / "raw", tmp_path / "source.json")


def test_listed_finding_without_an_image_is_an_error_naming_it(tmp_path):
    names = images_in(tmp_path, 4)
    marker = manifest(
        tmp_path, "image,label\n" + "".join(f"{n},{lab}\n" for n, lab in zip(names, ["A", "B|A", "No Finding", "B"]))
    )
    with pytest.raises(ValueError, match=r"dataset\.findings lists \['Effusoin'\], which no image has"):
        run(tmp_path, marker, {"task": "multilabel", "findings": ["A", "B", "Effusoin"]})
    with pytest.raises(ValueError, match=r"findings \['B'\] that dataset.findings does not list.*'B' / 'b'"):
        run(tmp_path, marker, {"task": "multilabel", "findings": ["A", "b"]})


def test_labels_differing_only_in_spelling_fail_until_merged(tmp_path):
    names = images_in(tmp_path, 4)
    marker = manifest(
        tmp_path,
        "image,label\n" + "".join(f"{n},{lab}\n" for n, lab in zip(names, ["Normal", "normal", "COVID", "Normal "])),
    )
    with pytest.raises(ValueError, match=r"\[\['Normal', 'normal'\]\] differ only in spelling.*dataset\.label_map"):
        run(tmp_path, marker)
    summary = run(tmp_path, marker, {"label_map": {"normal": "Normal"}})
    assert summary["classes"] == ["COVID", "Normal"]
    assert summary["seen"]["labels"]["normal"] == {"images": 1, "became": "Normal", "kept": 1, "prepared": 1}


def test_keep_labels_naming_no_label_is_an_error(tmp_path):
    names = images_in(tmp_path, 4)
    marker = manifest(tmp_path, "image,label\n" + rows(names, "ABAB"))
    with pytest.raises(ValueError, match=r"dataset\.keep_labels lists \['b'\], which no image has"):
        run(tmp_path, marker, {"keep_labels": ["A", "b"]})


def kaggle_tree(root: Path, folders: dict[str, int]) -> Path:
    """A COVID-19 Radiography Database tree: class folder name -> number of images in its images/ folder."""
    seed = 0
    for name, n in folders.items():
        (root / name / "images").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(texture(seed)).save(root / name / "images" / f"{name[:3]}-{i}.png")
            seed += 1
    return root


def test_class_folder_variants_merge_clash_or_are_reported(tmp_path):
    from cxrmim.data.sources import covid19_radiography_records, kaggle_folders

    root = kaggle_tree(tmp_path / "db", {"COVID": 2, "Normal": 2, "Viral_Pneumonia": 2, "Pneumonia_old": 1})
    records, warnings = covid19_radiography_records(root)
    assert {r.label for r in records} == {"COVID", "Normal", "Viral Pneumonia"}
    assert kaggle_folders(root)["Viral_Pneumonia"] == "class Viral Pneumonia"
    assert any("folder Pneumonia_old: ignored" in w for w in warnings)
    (root / "NORMAL" / "images").mkdir(parents=True)
    with pytest.raises(SourceError, match=r"folders NORMAL, Normal are all the class Normal"):
        covid19_radiography_records(root)


# ----------------------------------------------------------------------------- errors that point at the cause


@pytest.mark.parametrize(
    "delimiter, encoding", [(";", "utf-8"), ("\t", "utf-16"), (",", "utf-8-sig"), ("\t", "utf-16-le")]
)
def test_delimiters_and_encodings_are_read(tmp_path, delimiter, encoding):
    names = images_in(tmp_path, 2)
    text = f"image{delimiter}label\n" + "".join(f"{n}{delimiter}Pneumonie é\n" for n in names)
    manifest(tmp_path, text, encoding=encoding)
    records = manifest_records(tmp_path / "manifest.csv")
    assert [r.label for r in records] == ["Pneumonie é"] * 2 and records[1].image.name == "img1.png"


def test_cell_over_the_csv_field_limit_is_read(tmp_path):
    names = images_in(tmp_path, 1)
    report = "word " * 40_000  # 200 kB, over csv's default 128 kB limit
    manifest(tmp_path, f'image,label,report\n{names[0]},A,"{report}"\n')
    assert len(manifest_records(tmp_path / "manifest.csv")[0].report) > 190_000


def test_unreadable_image_is_a_counted_skip(tmp_path, monkeypatch):
    names = images_in(tmp_path, 4)
    locked = tmp_path / names[3]
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make the open fail as it does for everyone else
        real_open = Path.open

        def deny(self, *args, **kwargs):
            if self == locked:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real_open(self, *args, **kwargs)

        monkeypatch.setattr(Path, "open", deny)
    marker = manifest(tmp_path, "image,label\n" + rows(names, "ABAB"))
    summary = run(tmp_path, marker)
    assert summary["n_skipped_bad"] == 1 and summary["n_images"] == 3
    with pytest.raises(ValueError, match=r"img3\.png: cannot be read \(Permission denied\); make it readable"):
        run(tmp_path, marker, on_bad_image="fail", source_paths="relative")


def test_full_disk_says_so_and_leaves_nothing_behind(tmp_path, monkeypatch):
    from cxrmim.data import cache

    names = images_in(tmp_path, 4)
    marker = manifest(tmp_path, "image,label\n" + rows(names, "ABAB"))

    def full(self, *row):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache.CacheWriter, "write", full)
    with pytest.raises(ValueError, match=r"out: the disk is full: the prepared cache of 4 images at 32 px needs"):
        run(tmp_path, marker)
    assert not list((tmp_path / "out").glob("*.tmp*"))
    usage = type("Usage", (), {"free": 100})
    monkeypatch.setattr(cache.shutil, "disk_usage", lambda path: usage)
    with pytest.raises(ValueError, match=r"not enough disk space.*needs 0\.00 GB and 0\.00 GB are free"):
        run(tmp_path, marker)


def test_seed_minus_one_and_patch_larger_than_image_fail_in_the_config():
    config = load_config()
    config["split"]["seed"] = -1
    with pytest.raises(ValueError, match=r"split\.seed: -1 is less than the minimum of 0"):
        validate_config(config)
    config = load_config()
    config["prepare"]["image_size"], config["patch_validity"]["patch_size"] = 16, 32
    with pytest.raises(ValueError, match=r"patch_size 32 is larger than prepare\.image_size 16.*\(e\.g\. 2\)"):
        validate_config(config)


def test_format_is_detected_by_content_both_ways(tmp_path):
    from pydicom import examples

    Image.fromarray(texture(3)).save(tmp_path / "really_png.dcm", format="PNG")
    assert read_grey(tmp_path / "really_png.dcm").shape == (64, 64)
    buffer = io.BytesIO()
    examples.ct.save_as(buffer, enforce_file_format=True)
    (tmp_path / "really_dicom.png").write_bytes(buffer.getvalue())
    assert read_grey(tmp_path / "really_dicom.png").shape == (128, 128)


def test_identifying_file_names_stay_out_of_logs(tmp_path, caplog):
    names = images_in(tmp_path, 4)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "DOE_JANE_MRN998877.png")
    (tmp_path / "DOE_JOHN_MRN112233.png").write_bytes((tmp_path / names[0]).read_bytes())  # an exact copy
    marker = manifest(
        tmp_path, "image,label\n" + rows(names + ["DOE_JANE_MRN998877.png", "DOE_JOHN_MRN112233.png"], "ABABAA")
    )
    with caplog.at_level(logging.INFO):
        summary = run(tmp_path, marker)
    assert summary["n_skipped_bad"] == 1 and len(summary["duplicates"]) == 1
    assert "MRN" not in caplog.text and "manifest row 5 (source " in caplog.text and "manifest row 6" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        run(tmp_path, marker, source_paths="relative")
    assert "DOE_JANE_MRN998877.png" in caplog.text


# ----------------------------------------------------------------------------- the principle, generally


def test_prepared_summary_accounts_for_everything_seen(tmp_path):
    """Random manifests with repeated columns, spelling variants, extra columns and unused labels: each either
    fails naming the cause or is accounted for in summary.json `seen`."""
    rng = np.random.default_rng(0)
    pool = images_in(tmp_path, 12)
    spellings = {"Normal": ["Normal", "normal", "NORMAL"], "COVID": ["COVID", "covid"], "Viral": ["Viral"]}
    outcomes = {"ok": 0, "error": 0}
    for case in range(12):
        folder = tmp_path / f"case{case}"
        folder.mkdir()
        header = ["image", "label"] + list(
            rng.choice(["Age", "mask_note", "label", "Image", "view"], rng.integers(0, 3), replace=False)
        )
        labels = [rng.choice(spellings[c]) if rng.random() < 0.3 else c for c in rng.choice(list(spellings), len(pool))]
        lines = [",".join(header)] + [
            ",".join([f"../{n}", lab] + ["PA"] * (len(header) - 2)) for n, lab in zip(pool, labels)
        ]
        marker = manifest(folder, "\n".join(lines) + "\n")
        label_map = {v: c for c, vs in spellings.items() for v in vs if v != c} if case % 2 else {}
        try:
            summary = prepare(
                marker, {"name": "p", "kind": "manifest", "label_map": label_map}, SETTINGS, folder / "out"
            )
        except (SourceError, ValueError) as err:
            text = str(err)
            repeated = len({h.lower() for h in header}) < len(header)
            variants = len({lab.casefold() for lab in labels}) < len(set(labels))
            assert ("repeats a column" in text and repeated) or ("differ only in spelling" in text and variants), text
            outcomes["error"] += 1
            continue
        seen = summary["seen"]
        assert set(seen["columns"]) == set(header)
        assert all(
            seen["columns"][h] in ("image", "label", "view") or seen["columns"][h].startswith("ignored") for h in header
        )
        assert set(seen["labels"]) == set(labels)
        assert sum(e["images"] for e in seen["labels"].values()) == len(pool)
        assert sum(e["prepared"] for e in seen["labels"].values()) == summary["n_images"] == len(pool)
        assert set(summary["classes"]) == {seen["labels"][lab]["became"] for lab in labels}
        outcomes["ok"] += 1
    assert outcomes["ok"] >= 3 and outcomes["error"] >= 3, outcomes  # both branches were exercised


def test_provided_masks_failing_qc_are_named(caplog):
    from cxrmim.data.validity import provided_mask_decisions

    images = np.stack([texture(i) for i in range(3)])
    masks = np.zeros((3, 64, 64), np.uint8)
    masks[0, 16:48, 8:28] = masks[0, 16:48, 36:56] = 1
    masks[2, 16:48, 8:28] = 1  # one lung only
    with caplog.at_level(logging.WARNING):
        decision = provided_mask_decisions(
            images, masks, np.array([True, False, True]), {"qc": {}, "qc_policy": "skip"}
        )
    assert decision.tolist() == ["mask", "none", "skip"]
    assert "1 provided lung mask(s) fail QC (one_lung)" in caplog.text and "prepared index 2" in caplog.text


def test_provided_mask_qc_table_and_figure_name_the_images(tmp_path):
    from cxrmim.segment.qc import provided_mask_report

    names = images_in(tmp_path, 4)
    lungs = np.zeros((64, 64), np.uint8)
    lungs[16:48, 8:28] = lungs[16:48, 36:56] = 255
    one = lungs.copy()
    one[:, 32:] = 0
    for i, mask in enumerate([lungs, lungs, one, lungs]):
        Image.fromarray(mask).save(tmp_path / f"m{i}.png")
    marker = manifest(
        tmp_path,
        "image,label,mask\n"
        + "".join(f"{n},{lab},{m}\n" for n, lab, m in zip(names, "ABAB", ["m0.png", "", "m2.png", "m3.png"])),
    )
    run(tmp_path, marker)
    table = provided_mask_report(tmp_path / "out", {"qc_policy": "skip"}, tmp_path / "qc.csv", tmp_path / "qc.png")
    written = pd.read_csv(tmp_path / "qc.csv", keep_default_na=False)
    assert written["index"].tolist() == [0, 2, 3] and written["id"].tolist() == [
        "chk-000000",
        "chk-000002",
        "chk-000003",
    ]
    assert written.set_index("index").loc[2, "flags"] == "one_lung" and table["decision"].tolist() == [
        "mask",
        "skip",
        "mask",
    ]
    assert (tmp_path / "qc.png").stat().st_size > 1000


def test_source_check_before_any_job_covers_rows_and_labels(tmp_path):
    from cxrmim.data.source_check import check_source

    names = images_in(tmp_path, 4)
    manifest(tmp_path, "image,label\n" + rows(names, "ABAB") + "missing.png,A\n")
    dataset = {"name": "chk", "kind": "manifest", "source": str(tmp_path / "manifest.csv")}
    with pytest.raises(SourceError, match=r"row 5 \(line 6\): image file .*missing\.png not found"):
        check_source(dataset)
    manifest(tmp_path, "image,label\n" + rows(names, "AAAA"))
    with pytest.raises(ValueError, match="at least two classes"):
        check_source(dataset)
    check_source({**dataset, "source": str(tmp_path / "gone.csv")})  # first run: the download job reports it
    with pytest.raises(SourceError, match="does not exist"):
        check_source({**dataset, "source": str(tmp_path / "gone.csv")}, tmp_path / "source.json")


def test_prepared_summary_accounts_for_every_folder_and_label_file(tmp_path):
    """Random class-folder trees (spelling variants, clashes, empty classes, foreign folders) and NIH folders with
    extra label files: each fails naming the cause or is accounted for in summary.json `seen`."""
    import shutil

    from cxrmim.data.sources import KAGGLE_BY_FOLD
    from cxrmim.data.tasks import fold

    rng = np.random.default_rng(1)
    names = ["COVID", "covid", "COVID-19", "Normal", "NORMAL", "Viral_Pneumonia", "Lung Opacity", "Other", "old"]
    outcomes = {"ok": 0, "error": 0}
    for case in range(10):
        chosen = {str(n): int(rng.integers(0, 3)) for n in rng.choice(names, rng.integers(2, 6), replace=False)}
        root = kaggle_tree(tmp_path / f"db{case}", chosen)
        marker = tmp_path / f"db{case}.json"
        marker.write_text(json.dumps({"root": str(root)}))
        classes = [KAGGLE_BY_FOLD.get(fold(n)) for n in chosen]
        try:
            summary = prepare(marker, {"name": "k", "kind": "covid19_radiography"}, SETTINGS, tmp_path / f"o{case}")
        except (SourceError, ValueError) as err:
            text = str(err)
            clash = len({c for c in classes if c}) < len([c for c in classes if c])
            missing = not {"COVID", "Normal"} <= set(classes)
            few = len({c for c, n in zip(classes, chosen.values()) if c and n}) < 2
            assert (
                ("are all the class" in text and clash)
                or ("missing" in text and missing)
                or ("at least two classes" in text and few)
                or ("no images left" in text and few)
            ), (chosen, text)
            outcomes["error"] += 1
            continue
        seen = summary["seen"]
        assert set(seen["folders"]) == set(chosen)
        for name, fate in seen["folders"].items():
            label = KAGGLE_BY_FOLD.get(fold(name))
            assert fate == (f"class {label}" if label else fate) and (label or fate.startswith("ignored"))
            if label and not chosen[name]:
                assert any(f"{label}: no images found" in w for w in summary["warnings"])
        assert sum(e["images"] for e in seen["labels"].values()) == sum(
            n for name, n in chosen.items() if KAGGLE_BY_FOLD.get(fold(name))
        )
        outcomes["ok"] += 1
    assert min(outcomes.values()) >= 2, outcomes
    for case, extra in enumerate(["Data_Entry_2017.csv", "old/Data_Entry_2017.csv", "Data_Entry_2017_v2.csv"]):
        root = nih_tree(tmp_path / f"nih{case}")
        (root / extra).parent.mkdir(exist_ok=True)
        shutil.copy(root / "Data_Entry_2017_v2020.csv", root / extra)
        marker = tmp_path / f"nih{case}.json"
        marker.write_text(json.dumps({"root": str(root)}))
        dataset = {"name": "n", "kind": "nih_cxr14", "task": "multilabel", "findings": ["Effusion", "Hernia"]}
        with pytest.raises(SourceError, match=f"several files could be.*{extra}"):
            prepare(marker, dataset, SETTINGS, tmp_path / f"n{case}")
