"""Read chest X-ray images and lung masks (PNG, JPEG, BMP, TIFF, DICOM) as plain arrays."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cxrmim.data.grid import binarise_mask, resize_to_grid

__all__ = [
    "BadImageError",
    "binarise_mask",
    "check_mask_fits",
    "check_min_side",
    "check_not_blank",
    "dicom_view",
    "read_dicom",
    "read_grey",
    "read_mask",
    "resize_to_grid",
]

DICOM_SUFFIXES = {".dcm", ".dicom"}
SKIP_HINT = "remove it or set prepare.on_bad_image: skip"
BOMB_HINT = "if the image is genuine, raise prepare.max_image_pixels (0 = no limit)"
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own default decompression-bomb limit
# Little-endian (group, element) of the tags a DICOM file without its 128-byte preamble usually starts with.
BARE_DICOM_STARTS = (b"\x02\x00", b"\x08\x00")
# Leading bytes of the formats PIL reads (PNG, JPEG, BMP, TIFF both byte orders, GIF, JPEG 2000).
PIL_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*", b"GIF8", b"\x00\x00\x00\x0cjP")
EXIF_ORIENTATION = 0x0112

# Only these elements are ever parsed from a DICOM file: patient identifiers, dates and
# free text are never read, so they cannot leak into arrays, logs or error messages.
DICOM_TAGS = [
    "SpecificCharacterSet",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
    "ViewPosition",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "FloatPixelData",
    "DoubleFloatPixelData",
    "PixelData",
]

# PIL modes that hold 8-bit samples: their values are absolute and kept as x / 255.
EIGHT_BIT_MODES = {"L", "P", "PA", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}


class BadImageError(ValueError):
    """An image or mask file that cannot be used; the message names the file and a fix."""


def _bad(path: Path | str, problem: str, fix: str = SKIP_HINT) -> BadImageError:
    """Build a BadImageError with the standard '<path>: <problem>; <fix>' message."""
    return BadImageError(f"{path}: {problem}; {fix}")


def _is_dicom(path: Path) -> bool:
    """DICOM by content first (the 'DICM' magic, another format's signature), then by suffix or a bare data set."""
    with path.open("rb") as handle:
        head = handle.read(132)
    if head[128:132] == b"DICM" or head[:4] == b"DICM":
        return True
    if head.startswith(PIL_SIGNATURES):  # a PNG or JPEG named .dcm is still a PNG or JPEG
        return False
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    return head[:2] in BARE_DICOM_STARTS and _parses_as_dicom(path)


def _parses_as_dicom(path: Path) -> bool:
    """Whether pydicom, forced, finds image elements in a file that has no preamble (and possibly no suffix)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, specific_tags=["Rows", "Columns"], stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001 - anything pydicom cannot parse is not treated as DICOM
        return False
    return "Rows" in ds and "Columns" in ds


def _check_file(path: Path) -> None:
    """Raise BadImageError for a missing, non-regular or empty file."""
    if not path.is_file():
        raise _bad(path, "file not found or not a regular file", "check the path in the source or manifest")
    if path.stat().st_size == 0:
        raise _bad(path, "empty file (0 bytes)")
    try:
        with path.open("rb"):
            pass
    except OSError as err:  # permission denied, I/O error: a bad file, counted like any other
        raise _bad(
            path,
            f"cannot be read ({err.strerror or type(err).__name__})",
            f"make it readable (e.g. chmod a+r), {SKIP_HINT}",
        ) from None


def _check_shape(path: Path, array: np.ndarray) -> np.ndarray:
    """Reject arrays that are not 2-D or have a zero-length side."""
    if array.ndim != 2 or 0 in array.shape:
        raise _bad(path, f"decoded to an unusable array of shape {array.shape}")
    return array


def _minmax(array: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the array's finite range; constant or all-NaN arrays become zeros."""
    values = np.asarray(array, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.float32)
    low, high = float(values[finite].min()), float(values[finite].max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    values = np.where(finite, values, low)  # NaN/inf (float TIFFs) count as the darkest value
    return ((values - low) / (high - low)).astype(np.float32)


# ----------------------------------------------------------------------------- PIL formats


def set_max_image_pixels(limit: int | None) -> None:
    """Set PIL's decompression-bomb limit (prepare.max_image_pixels; 0 or None = no limit)."""
    Image.MAX_IMAGE_PIXELS = int(limit) if limit else None


def _decode_pil(path: Path) -> np.ndarray:
    """Decode a PNG/JPEG/BMP/TIFF file (first frame) to a native grey array (uint8, bool, int or float)."""
    try:
        with warnings.catch_warnings():
            # PIL only warns between the limit and twice the limit; treat both as too large
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _decode_pil_checked(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        limit = Image.MAX_IMAGE_PIXELS
        problem = f"image larger than the decompression-bomb guard of {limit:,} pixels (not corrupt)"
        raise _bad(path, problem, BOMB_HINT) from None


def _decode_pil_checked(path: Path) -> np.ndarray:
    """Decode with PIL; decode errors become BadImageError, decompression-bomb signals pass through."""
    try:
        with Image.open(path) as image:
            image.load()  # decode now so truncated files fail here, not later
            if image.getexif().get(EXIF_ORIENTATION, 1) not in (1, None):
                # viewers show the rotated image, and masks are drawn on what a viewer shows
                image = ImageOps.exif_transpose(image)
            if image.mode in EIGHT_BIT_MODES:
                # ITU-R 601 luminance for colour and palette images; alpha is dropped
                image = image.convert("L") if image.mode != "L" else image
            array = np.asarray(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        problem = f"cannot decode ({type(exc).__name__}): the file is corrupt, truncated or not an image"
        raise _bad(path, problem) from None
    if array.ndim == 3:  # e.g. 16-bit multi-channel TIFF that PIL cannot convert to L
        array = array[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return _check_shape(path, array)


def _pil_unit(array: np.ndarray) -> np.ndarray:
    """Map a decoded PIL array to float32 [0, 1]: 8-bit absolutely, deeper data by its own range."""
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    # 16-bit/float exports of X-rays use arbitrary stored ranges (12-bit, 14-bit, ...),
    # so they are min-max scaled like DICOM rather than divided by 65535.
    return _minmax(array)


# ----------------------------------------------------------------------------- DICOM


def _read_dataset(path: Path):
    """Read only the pixel-related DICOM elements; files without the preamble are read with force."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, specific_tags=DICOM_TAGS)
    except InvalidDicomError:
        pass
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file; the message must not echo values
        raise _bad(path, f"cannot parse DICOM ({type(exc).__name__}): the file is corrupt or truncated") from None
    try:
        return pydicom.dcmread(path, specific_tags=DICOM_TAGS, force=True)
    except Exception as exc:  # noqa: BLE001
        raise _bad(path, f"cannot parse DICOM ({type(exc).__name__}): the file is corrupt or not DICOM") from None


def _decode_failure(path: Path, ds, exc: Exception) -> BadImageError:
    """Explain a pixel decoding failure by transfer syntax (missing plugin vs corrupt data)."""
    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    syntax = getattr(uid, "name", None) or str(uid or "unknown")
    problem = f"cannot decode DICOM pixel data ({type(exc).__name__}, transfer syntax {syntax})"
    if uid is not None and uid.is_compressed:
        fix = f"check that pylibjpeg, pylibjpeg-openjpeg and pylibjpeg-libjpeg are installed; else {SKIP_HINT}"
        return _bad(path, f"{problem}: no decoder or corrupt data", fix)
    return _bad(path, f"{problem}: the pixel data is truncated or corrupt")


def _dicom_frame(path: Path, ds) -> np.ndarray:
    """Decode the first frame of the pixel data (colour is converted to RGB by pydicom)."""
    from pydicom.pixels import pixel_array

    if not any(key in ds for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise _bad(path, "DICOM file has no pixel data (truncated, or not an image object)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about harmless header quirks
            return pixel_array(ds, index=0)
    except Exception as exc:  # noqa: BLE001 - decoder errors vary by plugin
        raise _decode_failure(path, ds, exc) from None


def _dicom_display_values(ds, frame: np.ndarray) -> np.ndarray:
    """Apply the Modality LUT (rescale) and then the VOI LUT or window, as a viewer would."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(frame, ds)
    try:
        return apply_voi_lut(values, ds, index=0)
    except Exception:  # noqa: BLE001 - a malformed window (e.g. width 0) must not discard a good image
        return values


def _dicom_grey(path: Path, ds, frame: np.ndarray) -> np.ndarray:
    """Turn a decoded DICOM frame into a grey float array before scaling."""
    if frame.ndim == 3:  # colour (RGB after pydicom's YBR conversion): no LUTs, use luminance
        return frame[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return _check_shape(path, np.asarray(_dicom_display_values(ds, frame), dtype=np.float64))


def read_dicom(path: Path | str) -> np.ndarray:
    """Read a DICOM image as float32 2-D in [0, 1] with LUTs applied and MONOCHROME1 inverted."""
    path = Path(path)
    _check_file(path)
    ds = _read_dataset(path)
    frame = _dicom_frame(path, ds)
    grey = _minmax(_dicom_grey(path, ds, frame))
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        grey = 1.0 - grey  # MONOCHROME1 stores high values as dark: bring it to MONOCHROME2
    return grey


def dicom_view(path: Path | str) -> str | None:
    """Return the DICOM ViewPosition (e.g. 'PA', 'AP'), or None when absent or not a DICOM file."""
    import pydicom

    path = Path(path)
    _check_file(path)
    if not _is_dicom(path):
        return None
    try:
        ds = pydicom.dcmread(path, specific_tags=["ViewPosition"], stop_before_pixels=True, force=True)
        view = str(ds.get("ViewPosition", "") or "").strip()
    except Exception:  # noqa: BLE001 - the view is optional metadata; read_dicom reports broken files
        return None
    return view or None


# ----------------------------------------------------------------------------- public readers


def read_grey(path: Path | str) -> np.ndarray:
    """Read any supported image as float32 2-D in [0, 1] (colour and palette become luminance)."""
    path = Path(path)
    _check_file(path)
    if _is_dicom(path):
        return read_dicom(path)
    return _pil_unit(_decode_pil(path))


def check_min_side(path: Path | str, shape: tuple[int, ...], min_side: int) -> None:
    """Raise BadImageError when an image is smaller than prepare.min_image_side on either side."""
    if min(shape) < min_side:
        raise _bad(
            path,
            f"image of {shape[0]}x{shape[1]} px is below prepare.min_image_side ({min_side} px): "
            "too small to be a radiograph (a thumbnail or a placeholder?)",
            f"replace it with the full image, {SKIP_HINT}",
        )


def check_not_blank(path: Path | str, grey: np.ndarray) -> None:
    """Raise BadImageError for an image whose pixels all have one value (min-max scaling makes deep ones zero)."""
    if float(grey.max()) <= float(grey.min()):
        raise _bad(
            path,
            "every pixel has the same value (a blank image or a failed export): it carries no information",
            f"re-export it, {SKIP_HINT}",
        )


def read_mask(path: Path | str) -> np.ndarray:
    """Read a lung mask as bool 2-D, thresholded at half its value range (see binarise_mask)."""
    path = Path(path)
    _check_file(path)
    if _is_dicom(path):
        ds = _read_dataset(path)
        frame = _dicom_frame(path, ds)
        raw = frame if frame.ndim == 2 else frame.max(axis=-1)  # stored values, before any LUT
        return binarise_mask(_check_shape(path, raw))
    return binarise_mask(_decode_pil(path))


def check_mask_fits(
    image_shape: tuple[int, ...],
    mask_shape: tuple[int, ...],
    image_path: Path | str,
    mask_path: Path | str,
    tolerance: float = 0.02,
) -> None:
    """Raise BadImageError naming both files when image and mask aspect ratios differ by > tolerance."""
    image_aspect = image_shape[1] / image_shape[0]
    mask_aspect = mask_shape[1] / mask_shape[0]
    # relative difference, so a 299x299 image with a 256x256 mask fits exactly
    if abs(image_aspect - mask_aspect) / image_aspect > tolerance:
        raise BadImageError(
            f"{image_path} and mask {mask_path}: the mask does not fit the image "
            f"(image {image_shape[0]}x{image_shape[1]}, mask {mask_shape[0]}x{mask_shape[1]}, "
            f"aspect ratios differ by more than {tolerance:.0%}); "
            "fix the mask file name or path so it names this image's mask"
        )
