"""Optional contrast normalisation at prepare (prepare.contrast): a wide DICOM window leaves images washed out."""

from __future__ import annotations

import numpy as np

CONTRASTS = ("none", "percentile", "clahe")
PERCENTILES = (1.0, 99.0)
CLAHE_CLIP = 0.01


def normalise_contrast(image: np.ndarray, method: str) -> np.ndarray:
    """A uint8 grid image with its grey levels spread: percentile stretch, CLAHE (scikit-image), or unchanged."""
    if method == "none":
        return image
    from skimage import exposure

    unit = np.asarray(image, dtype=np.float64) / 255.0
    if method == "percentile":
        low, high = np.percentile(unit, PERCENTILES)
        spread = exposure.rescale_intensity(unit, in_range=(low, high), out_range=(0.0, 1.0)) if high > low else unit
    elif method == "clahe":
        spread = exposure.equalize_adapthist(unit, clip_limit=CLAHE_CLIP)
    else:
        raise ValueError(f"prepare.contrast must be one of {list(CONTRASTS)}, got {method!r}")
    return np.clip(np.rint(spread * 255.0), 0, 255).astype(np.uint8)
