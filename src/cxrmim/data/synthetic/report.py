"""Templated radiology reports consistent with the drawn class or findings."""

from __future__ import annotations

import re

import numpy as np

from cxrmim.data.synthetic.lesions import _findings_of
from cxrmim.data.synthetic.settings import CLASSES


def _report(rng: np.random.Generator, label: str, findings: dict, devices: list[str], follow_up: bool) -> str:
    """One templated paragraph consistent with the drawn class (or set of findings), naming their location."""
    if label not in CLASSES:  # a multi-finding label: one sentence group per finding, or the normal text
        names = _findings_of(label) or ["Normal"]
        parts = [_report(rng, name, findings, [], False) for name in names]
        sentences = [text for part in parts for text in re.split(r"(?<=\.)\s+", part)]
        text = " ".join(dict.fromkeys(sentences))  # a sentence shared by findings (no effusion) only once
        return " ".join((["Follow-up radiograph."] if follow_up else []) + [text] + devices)
    severity = findings.get("severity", 0.5)
    grade = "Subtle" if severity < 0.5 else ("Patchy" if severity < 0.8 else "Extensive")
    if label == "Normal":
        lines = [str(rng.choice(["The lungs are clear.", "Both lungs are clear."]))]
        lines.append("No pleural effusion or pneumothorax.")
    elif label == "COVID-19":
        lines = [f"{grade} ground-glass opacities in the peripheral lower zones of both lungs."]
        if findings.get("worse_side"):
            lines.append(f"Changes are more marked on the {findings['worse_side']}.")
        lines.append("No pleural effusion.")
    elif label == "Lung_Opacity":
        kind = "Dense" if severity >= 0.5 else "Ill-defined"
        lines = [f"{kind} focal consolidation in the {findings['side']} {findings['zone']} zone."]
        lines.append(str(rng.choice(["No pleural effusion.", "The remaining lung is clear."])))
    else:
        lines = [f"{grade} diffuse bilateral interstitial reticular opacities with perihilar predominance."]
        lines.append("No pleural effusion.")
    lines.append(str(rng.choice(["Heart size is normal.", "Cardiomediastinal silhouette is unremarkable."])))
    if follow_up:
        lines.insert(0, "Follow-up radiograph.")
    return " ".join(lines + devices)
