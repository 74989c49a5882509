"""Tests for cxrmim.data.readers: PIL formats, DICOM, masks, resizing and real DICOM samples."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrmim.data.readers import (
    BadImageError,
    check_mask_fits,
    dicom_view,
    read_dicom,
    read_grey,
    read_mask,
    resize_to_grid,
)

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import FileDataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid  # noqa: E402

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
DICOM_SAMPLES = REALDATA / "dicom_samples"
PATIENT_NAME = "Doe^Jane Secretname"
PATIENT_ID = "PID-SECRET-4711"


# ----------------------------------------------------------------------------- helpers


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    """Write an array with PIL and return the path."""
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(path)
    return path


def _gradient(height: int = 32, width: int = 48, high: int = 4095) -> np.ndarray:
    """Horizontal ramp 0..high as uint16 (left dark, right bright in stored values)."""
    return np.tile(np.linspace(0, high, width).round().astype(np.uint16), (height, 1))


def _dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    frames: int = 1,
    **elements,
) -> Path:
    """Write a CR DICOM with patient identifiers, 16-bit allocated, and extra elements (e.g. RescaleSlope)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19700101"
    ds.StudyDate = "20200315"
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _assert_names_path(error: pytest.ExceptionInfo, path: Path) -> None:
    """The BadImageError message must start with the offending path."""
    assert str(path) in str(error.value)


# ----------------------------------------------------------------------------- PIL formats


def test_png_8bit_grey_is_absolute(tmp_path):
    array = np.array([[0, 64], [128, 255]], dtype=np.uint8)
    out = read_grey(_save(tmp_path / "g8.png", array))
    assert out.dtype == np.float32 and out.shape == (2, 2)
    np.testing.assert_allclose(out, array / 255.0, atol=1e-6)


def test_png_16bit_grey_is_min_max_scaled(tmp_path):
    array = np.array([[1000, 2000], [3000, 5000]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(array).save(path)
    out = read_grey(path)
    np.testing.assert_allclose(out, (array - 1000) / 4000.0, atol=1e-6)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "LA"])
def test_colour_and_palette_become_luminance(tmp_path, mode):
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[:, :2] = (255, 0, 0)
    rgb[:, 2:] = (255, 255, 255)
    out = read_grey(_save(tmp_path / f"c_{mode}.png", rgb, mode))
    assert out.shape == (4, 4)
    assert out[0, 0] == pytest.approx(0.299, abs=0.01)  # pure red has ~30 % luminance
    assert out[0, 3] == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("suffix", [".jpg", ".bmp", ".tif"])
def test_jpeg_bmp_tiff(tmp_path, suffix):
    array = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (32, 1))
    out = read_grey(_save(tmp_path / f"ramp{suffix}", array))
    assert out.shape == (32, 64)
    np.testing.assert_allclose(out, array / 255.0, atol=0.04)  # JPEG is lossy


def test_corrupt_file_names_path(tmp_path):
    path = tmp_path / "corrupt.png"
    path.write_bytes(b"this is not an image at all")
    with pytest.raises(BadImageError, match="cannot decode") as error:
        read_grey(path)
    _assert_names_path(error, path)
    assert "on_bad_image" in str(error.value)


def test_truncated_png(tmp_path):
    good = _save(tmp_path / "good.png", np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    path = tmp_path / "truncated.png"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(BadImageError) as error:
        read_grey(path)
    _assert_names_path(error, path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.touch()
    with pytest.raises(BadImageError, match="empty") as error:
        read_grey(path)
    _assert_names_path(error, path)
    with pytest.raises(BadImageError):
        read_mask(path)


def test_missing_file(tmp_path):
    with pytest.raises(BadImageError, match="not found"):
        read_grey(tmp_path / "nope.png")


# ----------------------------------------------------------------------------- DICOM


def test_dicom_monochrome2_rescale_and_window(tmp_path):
    lut = {"RescaleSlope": 2, "RescaleIntercept": -1024, "WindowCenter": 3072, "WindowWidth": 8192}
    path = _dicom(tmp_path / "m2.dcm", _gradient(), **lut)
    out = read_dicom(path)
    assert out.dtype == np.float32 and out.shape == (32, 48)
    assert out.min() == 0.0 and out.max() == 1.0
    assert np.all(np.diff(out[0]) >= 0) and out[0, -1] > out[0, 0]  # high stored values are bright


def test_dicom_narrow_window_saturates(tmp_path):
    path = _dicom(tmp_path / "win.dcm", _gradient(), WindowCenter=2048, WindowWidth=400)
    out = read_dicom(path)
    # outside the window every value clips: about 45 % of the ramp on each side
    assert np.mean(out == 0.0) > 0.3 and np.mean(out == 1.0) > 0.3


def test_dicom_monochrome1_is_inverted(tmp_path):
    stored = _gradient()
    m1 = read_dicom(_dicom(tmp_path / "m1.dcm", stored, "MONOCHROME1", WindowCenter=2048, WindowWidth=4096))
    m2 = read_dicom(_dicom(tmp_path / "m2.dcm", stored, "MONOCHROME2", WindowCenter=2048, WindowWidth=4096))
    assert m1[0, -1] < m1[0, 0]  # high stored values come out dark
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)


def test_dicom_16bit_and_multiframe_first_frame(tmp_path):
    frames = np.stack([_gradient(high=65535), np.full((32, 48), 7, dtype=np.uint16)])
    out = read_dicom(_dicom(tmp_path / "mf.dcm", frames, bits_stored=16, frames=2))
    assert out.shape == (32, 48)
    np.testing.assert_allclose(out[0], np.linspace(0, 1, 48), atol=1e-4)


def test_dicom_detected_by_preamble(tmp_path):
    path = _dicom(tmp_path / "no_suffix.bin", _gradient())
    np.testing.assert_allclose(read_grey(path), read_dicom(path))


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "j2k"])
def test_compressed_dicom_matches_uncompressed(tmp_path, syntax):
    from pydicom.pixels import get_encoder

    try:
        available = get_encoder(syntax).is_available
    except NotImplementedError:
        available = False
    if not available:
        pytest.skip(f"no pydicom encoder for {syntax.name}")
    plain = _dicom(tmp_path / "plain.dcm", _gradient(), "MONOCHROME1")
    ds = pydicom.dcmread(plain)
    ds.compress(syntax)
    ds.save_as(tmp_path / "packed.dcm")
    np.testing.assert_allclose(read_grey(tmp_path / "packed.dcm"), read_grey(plain), atol=1e-6)


def test_dicom_view(tmp_path):
    assert dicom_view(_dicom(tmp_path / "pa.dcm", _gradient(), ViewPosition="PA")) == "PA"
    assert dicom_view(_dicom(tmp_path / "none.dcm", _gradient())) is None
    assert dicom_view(_save(tmp_path / "x.png", np.zeros((2, 2), np.uint8))) is None


def test_dicom_identifiers_never_leak(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    good = _dicom(tmp_path / "good.dcm", _gradient(), ViewPosition="AP")
    read_grey(good)
    dicom_view(good)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(good.read_bytes()[:-1000])
    no_pixels = tmp_path / "nopixels.dcm"
    ds = pydicom.dcmread(good)
    del ds.PixelData
    ds.save_as(no_pixels)
    messages = []
    for bad in (truncated, no_pixels):
        with pytest.raises(BadImageError) as error:
            read_grey(bad)
        _assert_names_path(error, bad)
        messages.append(str(error.value))
    text = caplog.text + "\n".join(messages)
    for secret in (PATIENT_NAME, "Secretname", PATIENT_ID, "19700101", "20200315"):
        assert secret not in text


# ----------------------------------------------------------------------------- masks, fit, resize


def test_read_mask_thresholds_at_half_its_range(tmp_path):
    array = np.array([[0, 1], [255, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(read_mask(_save(tmp_path / "m.png", array)), array > 127)
    binary = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(read_mask(_save(tmp_path / "b.png", binary)), binary == 1)
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (0, 0, 200)
    assert read_mask(_save(tmp_path / "rgb.png", rgb)).tolist() == [[True, False], [False, False]]
    wide = np.array([[0, 65535]], dtype=np.uint16)
    Image.fromarray(wide).save(tmp_path / "m16.png")
    assert read_mask(tmp_path / "m16.png").tolist() == [[False, True]]


def test_check_mask_fits():
    check_mask_fits((299, 299), (256, 256), "img.png", "mask.png")
    check_mask_fits((1000, 800), (505, 400), "img.png", "mask.png")  # 1 % off: within tolerance
    with pytest.raises(BadImageError) as error:
        check_mask_fits((512, 374), (256, 256), "a/img.png", "b/mask.png")
    assert "a/img.png" in str(error.value) and "b/mask.png" in str(error.value)


def test_resize_image_to_grid():
    out = resize_to_grid(np.full((299, 299), 0.5, dtype=np.float32), 64, is_mask=False)
    assert out.dtype == np.uint8 and out.shape == (64, 64) and np.all(out == 128)
    ramp = resize_to_grid(np.tile(np.arange(256, dtype=np.uint8), (100, 1)), 16, is_mask=False)
    assert ramp[0, 0] < 16 and ramp[0, -1] > 239 and np.all(np.diff(ramp[0].astype(int)) > 0)
    assert resize_to_grid(np.ones((8, 4), np.float32), 32, is_mask=False).shape == (32, 32)


def test_resize_mask_to_grid():
    mask = np.zeros((256, 256), dtype=bool)
    mask[:, :128] = True
    out = resize_to_grid(mask, 64, is_mask=True)
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 1}
    assert out[:, :32].all() and not out[:, 32:].any()
    up = resize_to_grid(np.array([[1, 0], [0, 1]], np.uint8), 4, is_mask=True)
    np.testing.assert_array_equal(up, np.kron([[1, 0], [0, 1]], np.ones((2, 2), np.uint8)))


def test_resize_rejects_bad_input():
    with pytest.raises(ValueError):
        resize_to_grid(np.zeros((2, 2, 3)), 4, is_mask=False)
    with pytest.raises(ValueError):
        resize_to_grid(np.zeros((2, 2)), 0, is_mask=True)


# ----------------------------------------------------------------------------- real DICOM samples


def _needs_samples() -> None:
    """Skip when the shared real-data folder is not mounted."""
    if not DICOM_SAMPLES.is_dir():
        pytest.skip(f"real DICOM samples not found at {DICOM_SAMPLES} (shared/realdata is optional)")


def _lungs_darker_than_mediastinum(image: np.ndarray) -> float:
    """Mediastinum mean minus mean of both lung fields (positive for a normally displayed frontal CXR)."""
    h, w = image.shape
    rows = slice(int(0.3 * h), int(0.7 * h))
    left, right = image[rows, int(0.16 * w) : int(0.42 * w)], image[rows, int(0.58 * w) : int(0.84 * w)]
    lungs = np.concatenate([left.ravel(), right.ravel()])
    mediastinum = image[int(0.25 * h) : int(0.75 * h), int(0.46 * w) : int(0.54 * w)]
    return float(mediastinum.mean() - lungs.mean())


@pytest.mark.realdata
def test_real_dicom_samples():
    _needs_samples()
    nih = read_grey(DICOM_SAMPLES / "nih_cxr14_no_finding.dcm")
    cr = read_grey(DICOM_SAMPLES / "pydicom_data_RG1_UNCI.dcm")
    assert nih.shape == (1024, 1024) and cr.shape == (1955, 1841)
    for image in (nih, cr):
        assert image.dtype == np.float32 and image.min() == 0.0 and image.max() == 1.0
        assert _lungs_darker_than_mediastinum(image) > 0.1  # MONOCHROME1 CR inverted like the MONOCHROME2 DX
    assert dicom_view(DICOM_SAMPLES / "pydicom_data_RG1_UNCI.dcm") == "PA"


@pytest.mark.realdata
def test_real_jpeg2000_matches_uncompressed():
    _needs_samples()
    j2k = DICOM_SAMPLES / "pydicom_data_RG1_J2KI.dcm"
    try:
        compressed = read_grey(j2k)
    except BadImageError as error:
        pytest.skip(f"no JPEG 2000 decoder: {error}")
    plain = read_grey(DICOM_SAMPLES / "pydicom_data_RG1_UNCI.dcm")
    assert compressed.shape == plain.shape
    assert float(np.abs(compressed - plain).mean()) < 1e-3
