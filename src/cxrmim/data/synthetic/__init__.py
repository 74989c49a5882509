"""Synthetic chest-X-ray phantoms with exact lung masks: the embedded default dataset.

Every image is drawn from independent random streams, `np.random.default_rng([seed, index, stream])`,
one per aspect (anatomy, nuisance, lesion, class, label noise, ...). Class evidence is a lesion map
multiplied by the lung mask and every later step is pointwise with class-independent parameters, so
rendering the same index with another label changes pixels only inside the lungs. Geometry is in
normalised coordinates (0..1 across the image) so any `image_size` gives the same picture.
Orientation is the usual PA view: the patient's right lung is on the image's left.

About 7% of images (15% of odd indices) are a follow-up of the previous index: same patient id, class
and anatomy (hence mask), new lesion, exposure and devices. Classes are drawn independently per
patient, so class counts follow `class_balance` only on average.

With `multi_finding`, each lesion type is present independently with `finding_probability` (per patient) and
the label is the set of findings joined by '|' ("No Finding" when none), as in multilabel datasets.
"""

from __future__ import annotations

from cxrmim.data.synthetic.generate import (
    Phantom,
    class_of,
    generate_dataset,
    lesion_mask,
    render_phantom,
)
from cxrmim.data.synthetic.settings import (
    CLASSES,
    FINDINGS,
    NO_FINDING,
    PhantomSettings,
)

__all__ = [
    "CLASSES",
    "FINDINGS",
    "NO_FINDING",
    "Phantom",
    "PhantomSettings",
    "class_of",
    "generate_dataset",
    "lesion_mask",
    "render_phantom",
]
