"""MRM (masked record modeling) as a `TrainingMethod` of the shared loop, with its Table 4 ablations.

Methods: `mrm` (report + super-resolution image loss), `mrm-noreport` (image loss only), `mrm-nosr` (the decoder
predicts the low-resolution patches instead of the full-resolution ones).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cxrmim import registry
from cxrmim.models.mrm import MaskedRecordModel
from cxrmim.models.report_text import whole_word_mask
from cxrmim.text.tokenizer import ReportTensors
from cxrmim.train.epoch import EpochRandom
from cxrmim.train.method_base import RunInputs
from cxrmim.train.pretrain_data import PretrainData, batch_inputs
from cxrmim.train.report_methods import ReportMethodOutputs, report_batch, report_inputs

# (report loss, super-resolution target) of each MRM variant, from its registry entry.
MRM_METHODS = {
    m.name: (m.option("report_loss"), m.option("super_resolution"))
    for m in registry.METHODS
    if m.builder == "cxrmim.train.mrm:build"
}
MASK_STREAM, AUGMENT_STREAM, WORD_STREAM = 0, 1, 2


class MaskedRecordStep(nn.Module):
    """The loop's model: MRM whose forward returns the total loss and the per-branch statistics."""

    def __init__(self, mrm: MaskedRecordModel) -> None:
        super().__init__()
        self.mrm = mrm

    def forward(self, images: torch.Tensor, plan, **report: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Loss plus, summed over the batch: image loss, report loss, masked words and correctly restored ones."""
        loss, image_loss, text, _ = self.mrm(images, plan, **report)
        batch = images.shape[0]
        zero = image_loss.new_zeros(())
        report_loss, count, correct = text if text is not None else (zero, zero, zero)
        stats = {"image_loss": image_loss.detach() * batch, "report_loss": report_loss.detach() * batch,
                 "masked_words": count, "correct_words": correct}  # fmt: skip
        return loss, stats


class MaskedRecordModeling(ReportMethodOutputs):
    """MRM as a `TrainingMethod`: augmented images, random image mask, whole-word report mask."""

    stat_names = ("image_loss", "report_loss", "masked_words", "correct_words")
    history_columns = ("image_loss", "report_loss", "word_accuracy")

    def __init__(self, data: PretrainData, method: str, mask_ratio: float, encoder_cfg: dict, settings: dict,
                 text: dict, reports: ReportTensors | None, vocab_size: int, mask_id: int) -> None:  # fmt: skip
        if method not in MRM_METHODS:
            raise ValueError(f"unknown MRM method {method!r}; choose one of {sorted(MRM_METHODS)}")
        use_report, super_resolution = MRM_METHODS[method]
        if use_report and reports is None:
            raise ValueError(f"{method} needs the reports and a tokenizer (text section, tokenizer rule)")
        self.data, self.method, self.mask_ratio = data, method, mask_ratio
        self.encoder_cfg, self.settings, self.text = encoder_cfg, settings, text
        self.reports = reports if use_report else None
        self.augment = settings.get("augment") or None
        self.word_mask_ratio = float((settings.get("mrm") or {}).get("word_mask_ratio", 0.5))
        max_length = int(text.get("max_length", 48)) if text else 1
        self.mrm = MaskedRecordModel(
            encoder_cfg, data.image_size, data.patch_size, mask_ratio, settings, max(vocab_size, 1), max_length,
            mask_id, super_resolution=super_resolution, report_loss=use_report,
        )  # fmt: skip
        self.core = self.mrm
        self.model = MaskedRecordStep(self.mrm)

    def loader_tensors(self) -> dict[str, torch.Tensor]:
        """Images (with masks when augmenting) plus the report tensors."""
        tensors = self.data.loader_tensors(self.augment, lung=False)  # random masking reads no lung validity
        return tensors | (self.reports.as_dict() if self.reports is not None else {})

    def make_batch(self, batch: dict[str, torch.Tensor], rng: EpochRandom) -> dict[str, Any]:
        """Normalised (augmented) images, the image mask, and the whole-word mask of the reports."""
        images, valid = batch_inputs(batch, self.data, self.augment, rng.stream(AUGMENT_STREAM))
        plan = self.mrm.mae.plan_masking(images.shape[0], valid, rng.stream(MASK_STREAM), images.device)
        inputs: dict[str, Any] = {"images": images, "plan": plan}
        if self.reports is not None:
            words = whole_word_mask(batch["report_word"], self.word_mask_ratio, rng.stream(WORD_STREAM))
            inputs |= report_batch(batch) | {"words_masked": words}
        return inputs

    def epoch_columns(self, sums: dict[str, float], n_images: int) -> dict[str, float]:
        """Mean image and report loss per image; share of masked words restored exactly."""
        return {
            "image_loss": sums["image_loss"] / n_images,
            "report_loss": sums["report_loss"] / n_images,
            "word_accuracy": sums["correct_words"] / max(sums["masked_words"], 1.0),
        }


def build(spec: registry.Method, data: PretrainData, run: RunInputs) -> MaskedRecordModeling:
    """The registry's builder of MRM and its ablations."""
    reports, vocab_size, mask_id = report_inputs(spec, data, run)
    return MaskedRecordModeling(data, spec.name, float(run.mask_ratio), run.encoder_cfg, run.settings, run.text or {},
                                reports, vocab_size, mask_id)  # fmt: skip
