"""Build the report-aware pretraining methods (MRM and its ablations, MedIM) for `run_pretraining`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrmim.inits import REPORT_METHODS
from cxrmim.train.medim import ReportGuidedMasking
from cxrmim.train.mrm import MRM_METHODS, MaskedRecordModeling
from cxrmim.train.pretrain_data import PretrainData
from cxrmim.train.report_methods import load_report_tensors

METHODS = (*MRM_METHODS, "medim")


def build_report_method(method: str, data: PretrainData, mask_ratio: float, encoder_cfg: dict[str, Any],
                        settings: dict[str, Any], prepared_dir: str | Path, tokenizer: str | Path | None,
                        text: dict[str, Any] | None):  # fmt: skip
    """The `TrainingMethod` of an MRM / MedIM run; report methods need the tokenizer file and `text` settings."""
    text = text or {}
    reports, vocab_size, mask_id = None, 0, 0
    if method in REPORT_METHODS:
        if not tokenizer or not text:
            raise ValueError(f"method {method} reads the reports: pass --tokenizer (the tokenizer rule's file) and --text")
        reports, vocab_size, mask_id = load_report_tensors(prepared_dir, tokenizer, data, text)
    if method == "medim":
        return ReportGuidedMasking(data, method, mask_ratio, encoder_cfg, settings, text, reports, vocab_size)
    if method in MRM_METHODS:
        return MaskedRecordModeling(data, method, mask_ratio, encoder_cfg, settings, text, reports, vocab_size, mask_id)
    raise ValueError(f"unknown report-aware method {method!r}; choose one of {list(METHODS)}")
