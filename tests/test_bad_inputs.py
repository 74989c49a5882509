"""Bad inputs through the data stages: each must give the documented outcome (error text, skip count or result)."""

from __future__ import annotations

import io
import json
import os
import signal
import stat
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from cxrmim.config import load_config, validate_config
from cxrmim.data.archive import safe_extract
from cxrmim.data.mask_qc import qc_table
from cxrmim.data.prepare import prepare
from cxrmim.data.readers import read_grey, read_mask
from cxrmim.data.sources import SourceError, covid19_radiography_records, manifest_records
from cxrmim.data.splits import split_dataset

DATASET = {"name": "bad", "kind": "manifest", "label_map": {}, "views": []}
SETTINGS = {"image_size": 32, "on_bad_image": "skip", "workers": 1, "min_image_side": 16}


def texture(seed: int, shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    """A smooth random grey image, different for every seed."""
    coarse = np.random.default_rng(seed).integers(0, 255, (6, 6)).astype(np.uint8)
    return np.array(Image.fromarray(coarse).resize(shape[::-1], Image.Resampling.BICUBIC))


def write_dataset(folder: Path, rows: list[dict], images: dict[str, np.ndarray | bytes]) -> Path:
    """Write image files and a manifest; return the download marker pointing at it."""
    for name, content in images.items():
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            Image.fromarray(content).save(folder / name)
    csv = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    marker = folder / "source.json"
    marker.write_text(json.dumps({"root": str(csv)}))
    return marker


def run_prepare(folder: Path, marker: Path, **settings) -> tuple[dict, pd.DataFrame]:
    """Prepare into folder/out and return the summary and the prepared manifest."""
    summary = prepare(marker, DATASET, {**SETTINGS, **settings}, folder / "out")
    return summary, pd.read_csv(folder / "out" / "manifest.csv", keep_default_na=False)


def plain_rows(n: int) -> tuple[list[dict], dict[str, np.ndarray]]:
    """n distinct images with labels A/B."""
    images = {f"img{i}.png": texture(i) for i in range(n)}
    return [{"image": name, "label": "AB"[i % 2]} for i, name in enumerate(images)], images


# ----------------------------------------------------------------------------- silent wrong results


def test_tiny_image_is_rejected_with_the_setting(tmp_path):
    rows, images = plain_rows(4)
    images["tiny.png"] = np.full((1, 1), 7, np.uint8)
    rows.append({"image": "tiny.png", "label": "A"})
    marker = write_dataset(tmp_path, rows, images)
    summary, manifest = run_prepare(tmp_path, marker)
    assert summary["n_skipped_bad"] == 1 and len(manifest) == 4
    with pytest.raises(
        ValueError, match=r"manifest row 5 \(source \w+\): image of 1x1 px is below prepare\.min_image_side"
    ):
        run_prepare(tmp_path, marker, on_bad_image="fail")
    with pytest.raises(ValueError, match=r"tiny\.png: image of 1x1 px is below prepare\.min_image_side"):
        run_prepare(tmp_path, marker, on_bad_image="fail", source_paths="relative")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_grey_noisy_masks_are_binarised(tmp_path, fmt):
    truth = np.zeros((64, 64), bool)
    truth[16:48, 8:28] = truth[16:48, 36:56] = True
    noisy = np.where(truth, 200, 0) + np.random.default_rng(0).integers(0, 30, truth.shape)
    path = tmp_path / f"mask.{fmt.lower()}"
    Image.fromarray(noisy.astype(np.uint8)).save(path, fmt, **({"quality": 60} if fmt == "JPEG" else {}))
    mask = read_mask(path)
    assert (mask != truth).mean() < 0.01, "a noisy 0/200 mask must not turn into whole-image lung"


def test_provided_masks_get_qc_and_policy(tmp_path):
    from cxrmim.data.validity import provided_mask_decisions

    images = np.stack([texture(i) for i in range(3)])
    masks = np.zeros((3, 64, 64), np.uint8)
    masks[0, 16:48, 8:28] = masks[0, 16:48, 36:56] = 1  # two plausible lungs
    masks[1] = 1  # whole image: too large
    has_mask = np.array([True, True, False])
    for policy, expected in (("all_valid", "all_valid"), ("skip", "skip"), ("keep", "mask")):
        decision = provided_mask_decisions(images, masks, has_mask, {"qc": {}, "qc_policy": policy})
        assert decision.tolist() == ["mask", expected, "none"]


def body_image() -> tuple[np.ndarray, np.ndarray]:
    """A radiograph-like image: a grey body with two darker lungs on black air, and the true lung mask."""
    yy, xx = np.mgrid[:128, :128]
    body = ((yy - 70) / 60) ** 2 + ((xx - 64) / 44) ** 2 < 1
    lungs = (((yy - 60) / 30) ** 2 + ((xx - 44) / 14) ** 2 < 1) | (((yy - 60) / 30) ** 2 + ((xx - 84) / 14) ** 2 < 1)
    image = np.where(body, 170, 8) - np.where(lungs, 90, 0) + np.random.default_rng(0).integers(0, 6, body.shape)
    return image.astype(np.uint8), lungs


def test_mask_spilling_off_the_body_is_flagged():
    image, lungs = body_image()
    spill = lungs.copy()
    spill[40:90, :50] |= ndimage.binary_dilation(lungs, iterations=30)[40:90, :50]  # runs onto the air at left
    table = qc_table(np.stack([image, image]), np.stack([lungs, spill]), None, {})
    assert table["flags"].iloc[0] == "" and "off_body" in table["flags"].iloc[1]


def test_real_ground_truth_masks_are_not_off_body(realdata):
    root = realdata / "cohen_covid_lungmasks"
    rows = pd.read_csv(root / "manifest.csv").head(40)
    images = [
        np.asarray(Image.fromarray((read_grey(root / r) * 255).astype(np.uint8)).resize((64, 64)))
        for r in rows["image"]
    ]
    masks = [np.asarray(Image.fromarray(read_mask(root / m).astype(np.uint8)).resize((64, 64))) for m in rows["mask"]]
    table = qc_table(np.stack(images), np.stack(masks).astype(bool), None, {})
    assert not table["flags"].str.contains("off_body").any()


def test_resized_reencoded_copy_stays_in_one_split_group(tmp_path):
    rows, images = plain_rows(12)
    buffer = io.BytesIO()
    Image.fromarray(images["img3.png"]).resize((50, 50), Image.Resampling.BILINEAR).save(buffer, "JPEG", quality=75)
    images["copy_of_3.jpg"] = buffer.getvalue()
    images["exact_of_5.png"] = images["img5.png"]
    rows += [
        {"image": "copy_of_3.jpg", "label": rows[3]["label"]},
        {"image": "exact_of_5.png", "label": rows[5]["label"]},
    ]
    marker = write_dataset(tmp_path, rows, images)
    summary, manifest = run_prepare(tmp_path, marker)
    assert len(summary["duplicates"]) == 2
    assert (
        manifest["group"].iloc[3] == manifest["group"].iloc[12]
        and manifest["group"].iloc[5] == manifest["group"].iloc[13]
    )
    assert manifest["group"].nunique() == 12
    split = split_dataset(manifest, 0.3, 0.0, seed=0)
    assert split.loc[[3, 12], "part"].nunique() == 1 and split.loc[[5, 13], "part"].nunique() == 1
    summary, manifest = run_prepare(tmp_path, marker, duplicates={"action": "drop"})
    assert len(manifest) == 12 and summary["n_dropped_duplicates"] == 2
    assert np.load(tmp_path / "out" / "images.npy").shape == (12, 32, 32)


def test_copy_with_another_label_fails_unless_resolved(tmp_path):
    rows, images = plain_rows(6)
    images["again.png"] = images["img2.png"]
    rows.append({"image": "again.png", "label": "Z"})
    marker = write_dataset(tmp_path, rows, images)
    with pytest.raises(
        ValueError, match=r"(?s)conflicting labels.*img2\.png.*again\.png.*prepare\.duplicates\.conflicts"
    ):
        run_prepare(tmp_path, marker, source_paths="relative")
    with pytest.raises(ValueError, match=r"(?s)conflicting labels.*manifest row 3 .*manifest row 7 "):
        run_prepare(tmp_path, marker)  # source_paths: hash names rows, not the files (names can identify patients)
    assert not (tmp_path / "out" / "images.npy").exists() and not list((tmp_path / "out").glob("*.tmp.npy"))
    _summary, manifest = run_prepare(tmp_path, marker, duplicates={"conflicts": "drop"})
    assert len(manifest) == 5 and "Z" not in set(manifest["label"])


def test_phantoms_have_no_false_duplicates(tmp_path):
    from cxrmim.data.acquire import acquire

    dataset = {"name": "ph", "kind": "synthetic", "synthetic": {"n_images": 300, "image_size": 64, "seed": 3}}
    acquire(dataset, tmp_path / "raw", tmp_path / "source.json")
    summary = prepare(tmp_path / "source.json", dataset, {**SETTINGS}, tmp_path / "out")
    assert summary["duplicates"] == [] and summary["n_images"] == 300


# ----------------------------------------------------------------------------- errors that point at the cause


def test_all_mismatched_masks_listed_with_a_fix_that_applies(tmp_path):
    rows, images = plain_rows(4)
    for i in range(4):
        images[f"m{i}.png"] = np.zeros((64, 128) if i in (1, 2) else (64, 64), np.uint8)
        rows[i]["mask"] = f"m{i}.png"
    marker = write_dataset(tmp_path, rows, images)
    with pytest.raises(ValueError) as error:
        run_prepare(tmp_path, marker, source_paths="relative")
    text = str(error.value)
    assert "2 mask(s)" in text and "m1.png" in text and "m2.png" in text and "m0.png" not in text
    assert "set prepare.on_bad_image: skip" not in text and "empty the mask cell" in text


def test_huge_image_names_the_limit_not_corruption(tmp_path):
    rows, images = plain_rows(3)
    images["big.png"] = texture(9, (200, 200))
    rows.append({"image": "big.png", "label": "A"})
    marker = write_dataset(tmp_path, rows, images)
    with pytest.raises(
        ValueError,
        match=r"big\.png: image larger than the decompression-bomb guard.*"
        r"prepare\.max_image_pixels",
    ):
        run_prepare(tmp_path, marker, on_bad_image="fail", max_image_pixels=20_000, source_paths="relative")
    summary, _ = run_prepare(tmp_path, marker, max_image_pixels=0)
    assert summary["n_skipped_bad"] == 0 and summary["n_images"] == 4


def test_dicom_without_preamble_or_suffix_is_read(tmp_path):
    from pydicom import examples

    buffer = io.BytesIO()
    examples.ct.save_as(buffer, enforce_file_format=True)
    bare = tmp_path / "scan0001"
    bare.write_bytes(buffer.getvalue()[132:])  # no preamble, no 'DICM', no suffix
    image = read_grey(bare)
    assert image.shape == (128, 128) and image.std() > 0.05


def test_symlinks_in_archives_are_refused_with_the_reason(tmp_path):
    zipped = tmp_path / "data.zip"
    with zipfile.ZipFile(zipped, "w") as handle:
        info = zipfile.ZipInfo("data/link.png")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        handle.writestr(info, "img.png")
    with pytest.raises(ValueError, match=r"link\.png.*is a symbolic link.*writes them as small text files"):
        safe_extract(zipped, tmp_path / "out")
    tarred = tmp_path / "data.tar"
    with tarfile.open(tarred, "w") as handle:
        link = tarfile.TarInfo("data/link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "../../etc/passwd"
        handle.addfile(link)
    with pytest.raises(ValueError, match=r"links are refused because extracting them"):
        safe_extract(tarred, tmp_path / "out")


def test_non_utf8_manifest_names_file_and_fix(tmp_path):
    Image.fromarray(texture(1)).save(tmp_path / "b.png")
    csv = tmp_path / "latin.csv"
    csv.write_bytes("image,label\nb.png,Pneumonie é\n".encode("latin-1"))
    with pytest.raises(SourceError, match=r"latin\.csv: not UTF-8.*iconv"):
        manifest_records(csv)


def test_hints_name_existing_keys(tmp_path):
    folder = tmp_path / "db"
    for label in ("COVID", "Normal"):
        (folder / label / "images").mkdir(parents=True)
        Image.fromarray(texture(len(label))).save(folder / label / "images" / "x.png")
    _, warnings = covid19_radiography_records(folder)
    text = " ".join(warnings)
    assert "patch_validity.no_mask_policy" in text and "prepare.mask_policy" not in text
    frame = pd.DataFrame(
        {
            "index": range(6),
            "id": [f"i{k}" for k in range(6)],
            "label": list("AAAAAB"),
            "group": [f"g{k}" for k in range(6)],
        }
    )
    frame.loc[5, "label"], frame.loc[4, "label"] = "B", "B"  # two B images: one to test, one to val
    with pytest.raises(ValueError, match=r"no train image.*lower split\.val_fraction"):
        split_dataset(frame, 0.3, 0.9, seed=0)


def test_patch_size_must_divide_image_size():
    config = load_config()
    config["prepare"]["image_size"], config["patch_validity"]["patch_size"] = 60, 8
    with pytest.raises(ValueError, match=r"patch_size 8 does not divide prepare\.image_size 60"):
        validate_config(config)


# ----------------------------------------------------------------------------- nothing left behind, nothing exposed


def test_source_column_is_hashed_unless_allowed(tmp_path):
    rows, images = plain_rows(3)
    images = {f"PATIENT-{k}": v for k, v in zip(("0042.png", "0043.png", "0044.png"), images.values())}
    rows = [{"image": name, "label": "AB"[i % 2]} for i, name in enumerate(images)]
    marker = write_dataset(tmp_path, rows, images)
    _, manifest = run_prepare(tmp_path, marker)
    assert not manifest["source"].str.contains("PATIENT").any()
    assert (tmp_path / "out" / "manifest.csv").read_text().count("PATIENT") == 0
    _, manifest = run_prepare(tmp_path, marker, source_paths="relative")
    assert manifest["source"].tolist() == list(images)


def test_extracted_folders_are_owner_only(tmp_path):
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("set/class/img.png", b"x")
    old = os.umask(0o022)
    try:
        target = safe_extract(archive, tmp_path / "raw")
    finally:
        os.umask(old)
    for path in [target, *target.rglob("*")]:
        assert path.stat().st_mode & 0o077 == 0, path


POOL_SCRIPT = """
import sys, time
from pathlib import Path
from cxrmim.data.loading import LoadOptions, iter_loaded
from cxrmim.data.sources import SourceRecord
records = [SourceRecord(image=Path(sys.argv[1]), label="A")] * 64
items = iter_loaded(records, LoadOptions(size=16), workers=2)
next(items)
print("ready", flush=True)
time.sleep(120)
"""


def _children(pid: int) -> list[int]:
    """Child process ids of `pid` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_pool_workers_die_with_a_killed_prepare(tmp_path):
    Image.fromarray(texture(0)).save(tmp_path / "a.png")
    parent = subprocess.Popen(
        [sys.executable, "-c", POOL_SCRIPT, str(tmp_path / "a.png")], stdout=subprocess.PIPE, text=True
    )
    workers: list[int] = []
    try:
        assert parent.stdout.readline().strip() == "ready"
        workers = _children(parent.pid)
        assert len(workers) >= 2
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 10
        while time.time() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
            time.sleep(0.2)
        alive = [
            w
            for w in workers
            if Path(f"/proc/{w}").exists() and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2]
        ]
        assert not alive, f"orphaned pool workers {alive}"
    finally:
        parent.kill()
        for worker in workers:  # a failing run must not leave its orphans behind either
            if Path(f"/proc/{worker}").exists():
                os.kill(worker, signal.SIGKILL)
