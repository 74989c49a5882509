"""The `flipped` lung-mask QC flag: every upright mask passes, every top-bottom flipped one is flagged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cxrmim.data.grid import resize_to_grid
from cxrmim.data.mask_qc import qc_table, upright_score
from cxrmim.data.readers import read_grey, read_mask
from cxrmim.data.synthetic.generate import generate_dataset
from cxrmim.data.synthetic.settings import PhantomSettings
from cxrmim.data.validity import provided_mask_decisions

REPO = Path(__file__).resolve().parents[1]


def assert_flip_caught(images: np.ndarray, masks: np.ndarray, margin: float) -> None:
    """Upright masks score above `margin` and carry no `flipped` flag; their top-bottom mirrors are all flagged."""
    upright = qc_table(images, masks, None, {})
    flipped = qc_table(images, masks[:, ::-1], None, {})
    assert not upright["flags"].str.contains("flipped").any()
    assert flipped["flags"].str.contains("flipped").all()
    assert upright["upright_score"].min() > margin
    np.testing.assert_allclose(flipped["upright_score"], -upright["upright_score"], atol=1e-9)


def default_phantoms(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The default run's first `n` phantoms on its prepared grid (images, bool masks)."""
    config = yaml.safe_load((REPO / "workflow_config.yaml").read_text())
    data = generate_dataset(PhantomSettings.from_config({**config["dataset"]["synthetic"], "n_images": n}))
    size = config["prepare"]["image_size"]
    images = np.stack([resize_to_grid(image, size, is_mask=False) for image in data["images"]])
    masks = np.stack([resize_to_grid(mask, size, is_mask=True) for mask in data["masks"]]).astype(bool)
    return images, masks


def test_phantom_masks_pass_and_their_flips_are_flagged():
    images, masks = default_phantoms(200)
    assert_flip_caught(images, masks, margin=0.25)
    # The default run's provided-mask decisions stay "mask" for every phantom.
    decisions = provided_mask_decisions(
        images, masks.astype(np.uint8), np.ones(len(masks), bool), {"qc_policy": "skip"}
    )
    assert (decisions == "mask").all()


def test_empty_mask_is_not_called_flipped():
    image = np.random.default_rng(0).integers(0, 255, (32, 32)).astype(np.uint8)
    assert upright_score(image, np.zeros((32, 32), bool)) == 0.0
    assert "flipped" not in qc_table(image[None], np.zeros((1, 32, 32), bool), None, {})["flags"].iloc[0]


@pytest.mark.realdata
@pytest.mark.parametrize("size", [64, 128])
def test_real_ground_truth_masks_pass_and_their_flips_are_flagged(realdata: Path, size: int):
    root = realdata / "cohen_covid_lungmasks"
    rows = pd.read_csv(root / "manifest.csv")
    images = np.stack([resize_to_grid(read_grey(root / path), size, is_mask=False) for path in rows["image"]])
    masks = np.stack(
        [resize_to_grid(read_mask(root / path).astype(np.uint8), size, is_mask=True) for path in rows["mask"]]
    ).astype(bool)
    assert_flip_caught(images, masks, margin=0.25)
