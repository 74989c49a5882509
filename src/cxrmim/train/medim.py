"""MedIM (report-guided masked image modeling) as a `TrainingMethod` of the shared loop."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cxrmim import registry
from cxrmim.models.masking import uniform_noise
from cxrmim.models.medim import ReportGuidedMIM, choose_sentences, min_sentence_words
from cxrmim.text.tokenizer import ReportTensors
from cxrmim.train.epoch import EpochRandom
from cxrmim.train.method_base import RunInputs
from cxrmim.train.pretrain_data import PretrainData, batch_inputs
from cxrmim.train.report_methods import ReportMethodOutputs, report_batch, report_inputs

MASK_STREAM, AUGMENT_STREAM, SENTENCE_STREAM = 0, 1, 2


class ReportGuidedStep(nn.Module):
    """The loop's model: MedIM whose forward returns its loss and, summed over the batch, each loss term."""

    def __init__(self, medim: ReportGuidedMIM) -> None:
        super().__init__()
        self.medim = medim

    def forward(self, images: torch.Tensor, **inputs: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Total loss; each loss term x batch size."""
        loss, losses, _, _ = self.medim(images, **inputs)
        batch = images.shape[0]
        return loss, {f"{k}_loss": v.detach() * batch for k, v in losses.items()}


class ReportGuidedMasking(ReportMethodOutputs):
    """MedIM as a `TrainingMethod`: augmented images, report tensors, a sentence per report, mask noise."""

    stat_names = ("align_loss", "kwm_loss", "sdm_loss")
    history_columns = stat_names

    def __init__(self, data: PretrainData, method: str, mask_ratio: float, encoder_cfg: dict, settings: dict,
                 text: dict, reports: ReportTensors, vocab_size: int) -> None:  # fmt: skip
        self.data, self.method, self.mask_ratio = data, method, mask_ratio
        self.encoder_cfg, self.settings, self.text, self.reports = encoder_cfg, settings, text, reports
        self.augment = settings.get("augment") or None
        self.min_words = min_sentence_words(settings)
        self.medim = ReportGuidedMIM(
            encoder_cfg, data.image_size, data.patch_size, mask_ratio, settings, vocab_size, int(text["max_length"])
        )
        self.core = self.medim
        self.model = ReportGuidedStep(self.medim)

    def loader_tensors(self) -> dict[str, torch.Tensor]:
        """Images (with masks when augmenting) plus the report tensors."""
        return self.data.loader_tensors(self.augment, lung=False) | self.reports.as_dict()  # report-guided, not lung

    def make_batch(self, batch: dict[str, torch.Tensor], rng: EpochRandom) -> dict[str, Any]:
        """Normalised (augmented) images, the reports, the SDM sentence of each and the masking noise."""
        images, _ = batch_inputs(batch, self.data, self.augment, rng.stream(AUGMENT_STREAM))
        size, length, n = images.shape[0], batch["report_ids"].shape[1], self.medim.mae.n_patches
        sentence_noise = uniform_noise(size, length, rng.stream(SENTENCE_STREAM), images.device)
        mask_noise = uniform_noise(size, 4 * n, rng.stream(MASK_STREAM), images.device).view(size, 2, 2, n)
        return {
            "images": images,
            **report_batch(batch),
            "report_keyword": batch["report_keyword"],
            "in_sentence": choose_sentences(
                batch["report_sentence"], batch["report_word"], self.min_words, sentence_noise
            ),
            "mask_noise": mask_noise,
        }

    def epoch_columns(self, sums: dict[str, float], n_images: int) -> dict[str, float]:
        """Mean alignment, KWM and SDM reconstruction losses per image."""
        return {name: sums[name] / n_images for name in self.stat_names}


def build(spec: registry.Method, data: PretrainData, run: RunInputs) -> ReportGuidedMasking:
    """The registry's builder of MedIM."""
    reports, vocab_size, _ = report_inputs(spec, data, run)
    return ReportGuidedMasking(data, spec.name, float(run.mask_ratio), run.encoder_cfg, run.settings, run.text or {},
                               reports, vocab_size)  # fmt: skip
