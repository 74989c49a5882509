"""The prepare stage on a small manifest dataset: bad images by policy, mismatched masks always an error."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrmim.data.prepare import prepare

DATASET = {"name": "mini", "kind": "manifest", "label_map": {}, "views": []}


def write_png(path: Path, shape: tuple[int, int], value: int = 128, seed: int | None = None) -> str:
    """A grey PNG with a bright square in it (on smooth random texture when seeded, so images differ)."""
    array = np.full(shape, value, np.uint8)
    if seed is not None:
        coarse = np.random.default_rng(seed).integers(0, 200, (4, 4)).astype(np.uint8)
        array = np.array(Image.fromarray(coarse).resize(shape[::-1], Image.Resampling.BILINEAR))
    array[shape[0] // 4 : shape[0] // 2, shape[1] // 4 : shape[1] // 2] = 255
    Image.fromarray(array).save(path)
    return path.name


def make_dataset(tmp_path: Path, mask_shape: tuple[int, int] = (40, 40), corrupt: bool = False) -> Path:
    """Four images with masks (optionally one corrupt image), a manifest, and the download marker."""
    rows = []
    for i in range(4):
        image = write_png(tmp_path / f"img{i}.png", (40, 40), seed=i)
        mask = write_png(tmp_path / f"mask{i}.png", mask_shape if i == 3 else (40, 40), value=0)
        rows.append({"image": image, "label": "A" if i % 2 else "B", "mask": mask, "patient_id": f"PAT-{i}"})
    if corrupt:
        (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
        rows.append({"image": "broken.png", "label": "A", "mask": "", "patient_id": "PAT-9"})
    csv = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    marker = tmp_path / "source.json"
    marker.write_text(json.dumps({"root": str(csv)}))
    return marker


def test_mask_with_another_aspect_ratio_names_both_files(tmp_path: Path):
    marker = make_dataset(tmp_path, mask_shape=(40, 80))
    settings = {"image_size": 16, "on_bad_image": "skip", "workers": 1, "source_paths": "relative"}
    with pytest.raises(ValueError, match=r"img3\.png.*mask3\.png|mask3\.png.*img3\.png"):
        prepare(marker, DATASET, settings, tmp_path / "out")
    assert not (tmp_path / "out" / "images.npy").exists()


def test_masks_at_another_resolution_are_resampled(tmp_path: Path):
    marker = make_dataset(tmp_path, mask_shape=(20, 20))
    summary = prepare(marker, DATASET, {"image_size": 16, "on_bad_image": "fail", "workers": 1}, tmp_path / "out")
    masks = np.load(tmp_path / "out" / "masks.npy")
    assert masks.shape == (4, 16, 16) and summary["n_without_mask"] == 0
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert not manifest["group"].astype(str).str.contains("PAT").any()


def test_corrupt_image_skipped_or_fatal_by_config(tmp_path: Path):
    marker = make_dataset(tmp_path, corrupt=True)
    summary = prepare(marker, DATASET, {"image_size": 16, "on_bad_image": "skip", "workers": 2}, tmp_path / "skip")
    assert summary["n_images"] == 4 and summary["n_skipped_bad"] == 1
    with pytest.raises(ValueError, match="broken.png.*on_bad_image"):
        prepare(
            marker,
            DATASET,
            {"image_size": 16, "on_bad_image": "fail", "workers": 1, "source_paths": "relative"},
            tmp_path / "fail",
        )


@pytest.mark.parametrize("method", ["percentile", "clahe"])
def test_contrast_option_spreads_a_washed_out_dicom(realdata: Path, method: str):
    """A CR with a wide header window (15000/30000) comes out washed out; prepare.contrast spreads it."""
    from cxrmim.data.loading import LoadOptions, load_record
    from cxrmim.data.sources import SourceRecord

    record = SourceRecord(image=realdata / "dicom_samples" / "pydicom_data_RG1_UNCI.dcm", label="x")
    spread = {}
    for contrast in ("none", method):
        image = load_record(record, LoadOptions(size=128, contrast=contrast)).image / 255.0
        low, high = np.percentile(image, [5, 95])
        spread[contrast] = high - low
    assert spread["none"] < 0.55 and spread[method] > spread["none"] + 0.1
