"""Tests of the synthetic chest-X-ray phantom generator."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from cxrmim.data.synthetic import (
    CLASSES,
    FINDINGS,
    PhantomSettings,
    class_of,
    generate_dataset,
    render_phantom,
)

SMALL = PhantomSettings(n_images=24, image_size=64, seed=3)


@pytest.fixture(scope="module")
def small_dataset() -> dict:
    """One small dataset shared by the tests that only read it."""
    return generate_dataset(SMALL)


def test_same_settings_give_identical_dataset(small_dataset: dict) -> None:
    """Rendering twice, and with a process pool, gives byte-identical arrays and lists."""
    again = generate_dataset(SMALL, workers=2)
    for key in ("images", "masks"):
        assert again[key].dtype == np.uint8
        assert again[key].shape == (SMALL.n_images, SMALL.image_size, SMALL.image_size)
        np.testing.assert_array_equal(again[key], small_dataset[key])
    for key in ("labels", "true_labels", "reports", "patient_ids"):
        assert again[key] == small_dataset[key]
        assert len(again[key]) == SMALL.n_images


def test_render_matches_dataset_and_seed_matters(small_dataset: dict) -> None:
    """A single render equals its row of the dataset; another seed gives another image."""
    phantom = render_phantom(SMALL, 5)
    np.testing.assert_array_equal(phantom.image, small_dataset["images"][5])
    assert phantom.true_label == class_of(SMALL, 5)
    other = render_phantom(dataclasses.replace(SMALL, seed=4), 5)
    assert not np.array_equal(other.image, phantom.image)


def test_masks_match_anatomy(small_dataset: dict) -> None:
    """Two separate lung fields per image, darker than the body tissue around them."""
    for image, mask in zip(small_dataset["images"], small_dataset["masks"]):
        assert set(np.unique(mask)) <= {0, 1}
        lung = mask.astype(bool)
        assert 0.08 < lung.mean() < 0.5
        _, n_components = ndimage.label(lung)
        assert n_components == 2
        # Body = bright-ish pixels near the lungs but outside them (excludes the dark background).
        ring = ndimage.binary_dilation(lung, iterations=6) & ~ndimage.binary_dilation(lung, iterations=2)
        assert image[lung].mean() < image[ring].mean() - 10


def test_default_framing_matches_real_radiographs() -> None:
    """Lungs fill about a third of the default frame (real CXRs here: 0.37); zoom 1 shows the whole body."""
    settings = PhantomSettings(n_images=40, image_size=64, seed=2)
    framed = generate_dataset(settings)["masks"].astype(bool)
    assert 0.28 < framed.mean() < 0.42
    # Patches of 8 px touching a lung: about 0.64 on the real images with masks in ../shared/realdata.
    touched = framed.reshape(40, 8, 8, 8, 8).any(axis=(2, 4)).mean()
    assert 0.55 < touched < 0.72
    whole_body = generate_dataset(dataclasses.replace(settings, zoom=1.0))["masks"].astype(bool)
    assert whole_body.mean() < 0.75 * framed.mean()
    assert not whole_body[:, [0, -1], :].any() and not whole_body[:, :, [0, -1]].any()


def test_lungs_are_on_both_sides(small_dataset: dict) -> None:
    """One lung field in each half of the image, the patient's right on the image's left."""
    for mask in small_dataset["masks"]:
        labelled, _ = ndimage.label(mask)
        centres = sorted(c[1] for c in ndimage.center_of_mass(mask, labelled, [1, 2]))
        assert centres[0] < SMALL.image_size / 2 < centres[1]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_class_changes_only_lung_pixels(index: int) -> None:
    """Rendering one index with each label changes pixels inside the lung mask only."""
    settings = PhantomSettings(image_size=96, seed=11)
    renders = {label: render_phantom(settings, index, label) for label in CLASSES}
    normal = renders["Normal"]
    outside = normal.mask == 0
    for label, phantom in renders.items():
        assert phantom.true_label == label
        np.testing.assert_array_equal(phantom.mask, normal.mask)
        difference = phantom.image.astype(int) - normal.image.astype(int)
        assert np.all(difference[outside] == 0), label
        if label != "Normal":
            assert np.abs(difference[~outside]).sum() > 0, label
            assert difference[~outside].mean() > 0, label  # lesions add density: brighter lungs


def test_class_balance_is_respected() -> None:
    """Drawn classes follow class_balance, including a class with zero weight."""
    settings = PhantomSettings(n_images=4000, class_balance=(2, 1, 1, 0))
    counts = dict.fromkeys(CLASSES, 0)
    for index in range(settings.n_images):
        counts[class_of(settings, index)] += 1
    shares = {label: count / settings.n_images for label, count in counts.items()}
    assert shares["Viral_Pneumonia"] == 0
    assert abs(shares["Normal"] - 0.5) < 0.04
    assert abs(shares["COVID-19"] - 0.25) < 0.04
    assert abs(shares["Lung_Opacity"] - 0.25) < 0.04


def test_label_noise_rate() -> None:
    """About label_noise of the recorded labels differ from the drawn class, never the other way."""
    settings = PhantomSettings(n_images=400, image_size=32, label_noise=0.2, seed=5)
    data = generate_dataset(settings)
    flipped = np.mean([a != b for a, b in zip(data["labels"], data["true_labels"])])
    assert 0.13 < flipped < 0.27
    clean = generate_dataset(dataclasses.replace(settings, n_images=100, label_noise=0.0))
    assert clean["labels"] == clean["true_labels"]


def test_follow_ups_share_patient_and_anatomy() -> None:
    """Some patients have two images: same mask (anatomy), different exposure."""
    settings = PhantomSettings(n_images=200, image_size=32, seed=2)
    ids = [render_phantom(settings, i).patient_id for i in range(settings.n_images)]
    repeated = [i for i in range(1, settings.n_images) if ids[i] == ids[i - 1]]
    assert 5 <= len(repeated) <= 30
    assert len(set(ids)) == settings.n_images - len(repeated)
    first, second = render_phantom(settings, repeated[0] - 1), render_phantom(settings, repeated[0])
    np.testing.assert_array_equal(first.mask, second.mask)
    assert first.true_label == second.true_label
    assert not np.array_equal(first.image, second.image)


@pytest.mark.parametrize(
    ("label", "words"),
    [
        ("Normal", ["clear"]),
        ("COVID-19", ["ground-glass", "peripheral", "lower zones", "both lungs"]),
        ("Lung_Opacity", ["focal consolidation", "zone"]),
        ("Viral_Pneumonia", ["interstitial", "perihilar", "bilateral"]),
    ],
)
def test_reports_name_the_findings(label: str, words: list[str]) -> None:
    """Reports mention the class's findings; a normal report mentions no finding words."""
    for index in range(6):
        report = render_phantom(SMALL, index, label).report.lower()
        for word in words:
            assert word in report, (label, report)
        if label == "Normal":
            for finding in ("opacit", "consolidation", "ground-glass", "interstitial"):
                assert finding not in report
        if label == "Lung_Opacity":
            assert ("right" in report.split("zone")[0]) or ("left" in report.split("zone")[0])


def test_from_config_reads_the_workflow_section() -> None:
    """The config section maps onto the settings; missing keys keep their defaults."""
    section = {
        "n_images": 10,
        "image_size": 64,
        "class_balance": [1, 2, 1, 1],
        "lesion_contrast": 0.3,
        "label_noise": 0.0,
        "nuisance_strength": 0.5,
        "zoom": 1.2,
        "seed": 1,
    }
    settings = PhantomSettings.from_config(section)
    assert settings.class_balance == (1, 2, 1, 1)
    assert settings.n_images == 10 and settings.seed == 1 and settings.zoom == 1.2
    assert PhantomSettings.from_config({"seed": 9}) == PhantomSettings(seed=9)


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        ({"n_imgs": 10}, "n_imgs"),
        ({"n_images": 0}, "n_images"),
        ({"image_size": 16}, "image_size"),
        ({"class_balance": [1, 1, 1]}, "class_balance"),
        ({"class_balance": [0, 0, 0, 0]}, "class_balance"),
        ({"label_noise": 1.5}, "label_noise"),
        ({"lesion_contrast": -0.1}, "lesion_contrast"),
        ({"nuisance_strength": "high"}, "nuisance_strength"),
        ({"zoom": 3.0}, "zoom"),
        ({"seed": True}, "seed"),
    ],
)
def test_bad_config_raises_naming_the_key(section: dict, needle: str) -> None:
    """Unknown keys and out-of-range values raise a ValueError that names the key."""
    with pytest.raises(ValueError, match=needle):
        PhantomSettings.from_config(section)


def test_bad_label_override_raises() -> None:
    """An override label must be one of CLASSES."""
    with pytest.raises(ValueError, match="COVID"):
        render_phantom(SMALL, 0, "COVID")


MULTI = PhantomSettings(
    n_images=160, image_size=48, seed=5, multi_finding=True, finding_probability=0.35, label_noise=0.0
)


def test_multi_finding_phantoms_draw_findings_independently() -> None:
    """Each lesion type appears with about finding_probability, alone or together; none gives 'No Finding'."""
    labels = [class_of(MULTI, i) for i in range(MULTI.n_images)]
    sets = [set(label.split("|")) - {"No Finding"} for label in labels]
    for finding in FINDINGS:
        share = np.mean([finding in s for s in sets])
        assert 0.2 < share < 0.5, (finding, share)
    assert any(len(s) >= 2 for s in sets) and "No Finding" in labels
    assert all(s <= set(FINDINGS) for s in sets)
    named = [label.split("|") for label in labels if label != "No Finding"]
    assert all(names == sorted(names, key=FINDINGS.index) for names in named)  # one spelling per set


def test_multi_finding_lesions_add_up_inside_the_lungs() -> None:
    """Two findings together change lung pixels more than either alone, and nothing outside the lungs."""
    none, one, both = (render_phantom(MULTI, 0, label) for label in ("No Finding", "COVID-19", "COVID-19|Lung_Opacity"))
    outside = none.mask == 0
    diff_one = one.image.astype(int) - none.image.astype(int)
    diff_both = both.image.astype(int) - none.image.astype(int)
    assert np.all(diff_one[outside] == 0) and np.all(diff_both[outside] == 0)
    assert diff_both[~outside].sum() > diff_one[~outside].sum() > 0
    report = both.report.lower()
    assert "ground-glass" in report and "consolidation" in report and report.count("no pleural effusion") <= 1


def test_multi_finding_label_noise_toggles_one_finding() -> None:
    noisy = dataclasses.replace(MULTI, label_noise=1.0)
    for index in range(20):
        phantom = render_phantom(noisy, index)
        recorded = set(phantom.label.split("|")) - {"No Finding"}
        true = set(phantom.true_label.split("|")) - {"No Finding"}
        assert len(recorded ^ true) == 1


def test_multi_finding_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="finding_probability"):
        PhantomSettings.from_config({"multi_finding": True, "finding_probability": 1.5})
    with pytest.raises(ValueError, match="multi_finding"):
        PhantomSettings.from_config({"multi_finding": "yes"})
