"""MedIM: masked image modeling whose masks follow the report (knowledge words, KWM, and one sentence, SDM).

A word-to-patch alignment, learned jointly, turns the report into a per-patch score map: attention =
softmax_patches(word . patch / t) over the encoder's features of the whole image; KWM sums it over the knowledge
words, SDM over the words of one sentence. `guided_plan` masks patches above the median score first. Both masked
images are reconstructed by one MAE (pixel loss on masked patches). The alignment loss is GLoRIA's (Huang et al.
2021) local loss plus a global image-report InfoNCE: each knowledge token of report i (the tokens KWM reads; the
first `medim.local_slots`, for cost) attends over the patches of every image j of the batch; the cosine between the token
and its attended context, aggregated over the tokens (log-sum-exp), scores the pair (i, j), and InfoNCE in both
directions makes a report find its image and back. Only an image with the lesion has lesion patches, so finding and
zone words must attend to them to score their own image above the others (a local loss within one report, as
the paper's, is met by any context that differs between words, lesion or not).
Differences from the paper: the mask hides input patches (MAE style), not encoder output features, so the
encoder is a plain MAE encoder; one decoder serves KWM and SDM; the count masked per image is fixed (see
`guided_plan`) so a batch keeps one shape; the local alignment loss is GLoRIA's cross-image one.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cxrmim.models.mae import MaskedAutoencoder, build_mae
from cxrmim.models.masking import MaskPlan, guided_plan, masked_count
from cxrmim.models.report_text import ReportTransformer


def full_plan(batch_size: int, n_patches: int, device: torch.device) -> MaskPlan:
    """Every patch visible, in order (the alignment pass sees the whole image)."""
    order = torch.arange(n_patches, device=device).expand(batch_size, -1)
    mask = torch.zeros(batch_size, n_patches, device=device)
    return MaskPlan(order, mask, order, torch.zeros(batch_size, dtype=torch.bool, device=device))


def kwm_scores(attention: torch.Tensor, keyword: torch.Tensor) -> torch.Tensor:
    """Knowledge-word-driven map: word-to-patch attention (B, L, n) summed over knowledge tokens -> (B, n)."""
    return torch.einsum("bln,bl->bn", attention, keyword.to(attention.dtype))


def sdm_scores(attention: torch.Tensor, in_sentence: torch.Tensor) -> torch.Tensor:
    """Sentence-driven map: attention summed over the tokens of the chosen sentence -> (B, n)."""
    return torch.einsum("bln,bl->bn", attention, in_sentence.to(attention.dtype))


MIN_SENTENCE_WORDS = 3  # default of pretrain.medim.min_sentence_words


def min_sentence_words(settings: dict[str, Any]) -> int:
    """Shortest sentence SDM may pick, from a `pretrain:` section (training and the MedIM figure read the same)."""
    return int((settings.get("medim") or {}).get("min_sentence_words", MIN_SENTENCE_WORDS))


def choose_sentences(sentence: torch.Tensor, word: torch.Tensor, min_words: int, noise: torch.Tensor) -> torch.Tensor:
    """One sentence per report, uniformly among those with more than `min_words` words (else among all non-empty
    ones), as a (B, L) bool over its tokens. `noise` (B, L) uniform decides; sentence slot s has noise[:, s].
    """
    first_of_word = (word >= 0) & (word != F.pad(word, (1, 0), value=-1)[:, :-1])
    counts = torch.zeros_like(sentence).scatter_add_(1, sentence.clamp_min(0), first_of_word.long())
    eligible = counts > min_words
    eligible = torch.where(eligible.any(dim=1, keepdim=True), eligible, counts > 0)
    chosen = torch.where(eligible, noise, torch.full_like(noise, -1.0)).argmax(dim=1)
    return (sentence == chosen.unsqueeze(1)) & (sentence >= 0) & eligible.any(dim=1, keepdim=True)


def info_nce(query: torch.Tensor, keys: torch.Tensor, temperature: float, valid: torch.Tensor | None = None):
    """Cross-entropy of each query against its own key among `keys` (B, K, D); invalid keys excluded -> (B, K)."""
    logits = torch.einsum("bqd,bkd->bqk", query, keys) / temperature
    if valid is not None:
        logits = logits.masked_fill(~valid.unsqueeze(1), -1.0e4)  # finite: 0 x CE of a padded query stays 0
    target = torch.arange(query.shape[1], device=query.device).expand(query.shape[0], -1)
    return F.cross_entropy(logits.transpose(1, 2), target, reduction="none")


# GLoRIA's word aggregation: S(i, j) = log sum_w exp(cos / word_temperature) (their temp2 = 5, i.e. 0.2).
WORD_TEMPERATURE = 0.2
# Knowledge tokens per report in the cross-image loss (B x B x slots x n attention): all 48 tokens made a default
# CPU step 80% slower, 8 slots about 5% (benchmarks/pretrain_step.py); phantom reports have 5-12.
LOCAL_SLOTS = 8


def keyword_slots(keyword: torch.Tensor, slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (B, slots) of each report's first `slots` knowledge tokens, in order, and whether a slot holds one."""
    length = keyword.shape[1]
    position = torch.arange(length, device=keyword.device)
    rank = torch.where(keyword, position, position + length)  # knowledge tokens first, each group in report order
    index = torch.topk(rank, min(slots, length), dim=1, largest=False).indices
    return index, torch.gather(keyword, 1, index)


def cross_attention(words: torch.Tensor, patches: torch.Tensor, temperature: float) -> torch.Tensor:
    """Attention of every report's words over every image's patches: (B, L, D), (B, n, D) -> (B_report, B_image, L, n)."""
    return torch.softmax(torch.einsum("ild,jnd->ijln", words, patches) / temperature, dim=-1)


def word_image_scores(attn: torch.Tensor, words: torch.Tensor, patches: torch.Tensor, real: torch.Tensor,
                      word_temperature: float = WORD_TEMPERATURE) -> torch.Tensor:  # fmt: skip
    """GLoRIA's score S(i, j): cos(word of report i, its context in image j), log-sum-exp over the real words -> (B, B)."""
    context = F.normalize(torch.einsum("ijln,jnd->ijld", attn, patches), dim=-1)
    cosine = torch.einsum("ijld,ild->ijl", context, words)
    cosine = cosine.masked_fill(~real.unsqueeze(1), -1.0e4)  # padding words count for nothing
    return torch.logsumexp(cosine / word_temperature, dim=-1)


def symmetric_info_nce(scores: torch.Tensor, temperature: float, has_words: torch.Tensor) -> torch.Tensor:
    """Mean of report->image and image->report InfoNCE over (B, B) scores; empty reports take no part."""
    logits = (scores / temperature).masked_fill(~has_words.unsqueeze(1), -1.0e4)  # no image picks an empty report
    target = torch.arange(scores.shape[0], device=scores.device)
    per_pair = F.cross_entropy(logits, target, reduction="none") + F.cross_entropy(logits.T, target, reduction="none")
    weight = has_words.float()
    return (per_pair * weight).sum() / (2 * weight.sum().clamp_min(1.0))


class ReportGuidedMIM(nn.Module):
    """MedIM: MAE + report transformer + word-patch alignment producing the KWM and SDM masks."""

    def __init__(self, encoder_cfg: dict[str, Any], image_size: int, patch_size: int, mask_ratio: float,
                 settings: dict[str, Any], vocab_size: int, max_length: int) -> None:  # fmt: skip
        super().__init__()
        medim = settings.get("medim") or {}
        text = medim.get("text") or {}
        self.mae: MaskedAutoencoder = build_mae(encoder_cfg, image_size, patch_size, "random", mask_ratio, settings)
        text_dim = int(text.get("embed_dim", 64))
        self.text = ReportTransformer(
            vocab_size, max_length, text_dim, int(text.get("depth", 1)), int(text.get("num_heads", 4))
        )
        self.patch_proj = nn.Linear(self.mae.encoder.embed_dim, text_dim)
        self.word_proj = nn.Linear(text_dim, text_dim)
        self.temperature = float(medim.get("temperature", 0.1))
        self.word_temperature = float(medim.get("word_temperature", WORD_TEMPERATURE))
        self.local_slots = int(medim.get("local_slots", LOCAL_SLOTS))
        self.high, self.low = float(medim.get("mask_high", 0.9)), float(medim.get("mask_low", 0.1))
        self.weights = {k: float(medim.get(f"{k}_weight", 1.0)) for k in ("align", "kwm", "sdm")}
        self.n_masked = masked_count(self.mae.n_patches, mask_ratio)
        # False: the first half of each batch is reconstructed under its KWM mask, the second under its SDM mask
        # (one MAE pass per step instead of two; the cheap CPU setting).
        self.both_views = bool(medim.get("both_views", True))
        # False: the alignment pass runs the encoder without gradient (its loss trains the text side and the
        # projections only; the encoder learns from reconstruction): about a third of that pass's cost.
        self.align_encoder_grad = bool(medim.get("align_encoder_grad", True))

    def align(self, images: torch.Tensor, ids: torch.Tensor, attention: torch.Tensor,
              keyword: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Word-to-patch attention of each report over its own image (B, L, n) and the alignment loss (global
        image-report InfoNCE + GLoRIA's cross-image local loss, over the first `local_slots` knowledge tokens of
        each report when `keyword` is given, else over all its words)."""
        batch, n = images.shape[0], self.mae.n_patches
        with torch.set_grad_enabled(self.align_encoder_grad and torch.is_grad_enabled()):
            latent = self.mae.forward_encoder(images, full_plan(batch, n, images.device))
        patches = F.normalize(self.patch_proj(latent[:, self.mae.n_prefix :]).float(), dim=-1)
        words = F.normalize(self.word_proj(self.text(ids, attention)).float(), dim=-1)
        own = torch.softmax(torch.einsum("bld,bnd->bln", words, patches) / self.temperature, dim=-1)
        has_words = attention.any(dim=1)
        # Global: the mean image feature must find its own report's mean word feature in the batch.
        image_vec = F.normalize(patches.mean(dim=1), dim=-1)
        report_vec = F.normalize((words * attention.unsqueeze(-1)).sum(dim=1), dim=-1)
        global_loss = info_nce(image_vec.unsqueeze(0), report_vec.unsqueeze(0), self.temperature)[0]
        global_loss = (global_loss * has_words).sum() / has_words.sum().clamp_min(1)
        # Local (GLoRIA): each report's words, attending over each image, must score their own image highest.
        local, real = words, attention
        if keyword is not None:  # B x B x L x n is the cost: knowledge tokens only (what KWM reads)
            index, real = keyword_slots(keyword & attention, self.local_slots)
            local = torch.gather(words, 1, index.unsqueeze(-1).expand(-1, -1, words.shape[-1]))
        attn = cross_attention(local, patches, self.temperature)
        scores = word_image_scores(attn, local, patches, real, self.word_temperature)
        local_loss = symmetric_info_nce(scores, self.temperature, real.any(dim=1))
        return own, global_loss + local_loss

    def reconstruct(self, images: torch.Tensor, plan: MaskPlan) -> torch.Tensor:
        """MAE pixel loss of one masked view."""
        pred = self.mae.forward_decoder(self.mae.forward_encoder(images, plan), plan)
        return self.mae.forward_loss(images, pred, plan.mask)

    def plans(self, attn: torch.Tensor, keyword: torch.Tensor, in_sentence: torch.Tensor,
              mask_noise: torch.Tensor) -> tuple[MaskPlan, MaskPlan]:  # fmt: skip
        """KWM and SDM mask plans from the (detached) attention; `mask_noise` (B, 2, 2, n)."""
        attn = attn.detach()
        kwm = guided_plan(kwm_scores(attn, keyword), mask_noise[:, 0], self.n_masked, self.high, self.low)
        sdm = guided_plan(sdm_scores(attn, in_sentence), mask_noise[:, 1], self.n_masked, self.high, self.low)
        return kwm, sdm

    def reconstruct_split(
        self, images: torch.Tensor, kwm: MaskPlan, sdm: MaskPlan
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One MAE pass: the first half of the batch under KWM, the rest under SDM -> (KWM loss, SDM loss)."""
        first = (torch.arange(images.shape[0], device=images.device) < images.shape[0] // 2).unsqueeze(1)
        pick = lambda a, b: torch.where(first, a, b)  # noqa: E731  (row-wise choice; plans share one shape)
        plan = MaskPlan(pick(kwm.ids_keep, sdm.ids_keep), pick(kwm.mask, sdm.mask),
                        pick(kwm.ids_restore, sdm.ids_restore), kwm.fallback)  # fmt: skip
        pred = self.mae.forward_decoder(self.mae.forward_encoder(images, plan), plan)
        half = first.float()
        return (self.mae.forward_loss(images, pred, plan.mask * half),
                self.mae.forward_loss(images, pred, plan.mask * (1 - half)))  # fmt: skip

    def forward(self, images: torch.Tensor, report_ids: torch.Tensor, report_attention: torch.Tensor,
                report_keyword: torch.Tensor, in_sentence: torch.Tensor, mask_noise: torch.Tensor):  # fmt: skip
        """(total loss, {align, kwm, sdm} losses, KWM plan, SDM plan)."""
        attn, align_loss = self.align(images, report_ids, report_attention, report_keyword)
        kwm, sdm = self.plans(attn, report_keyword, in_sentence, mask_noise)
        if self.both_views:
            kwm_loss, sdm_loss = self.reconstruct(images, kwm), self.reconstruct(images, sdm)
        else:
            kwm_loss, sdm_loss = self.reconstruct_split(images, kwm, sdm)
        losses = {"align": align_loss, "kwm": kwm_loss, "sdm": sdm_loss}
        total = sum(self.weights[k] * v for k, v in losses.items())
        return total, losses, kwm, sdm

    def export_encoder(self, encoder_cfg: dict[str, Any]) -> nn.Module:
        """The image encoder itself (it already runs at the full image size)."""
        return self.mae.encoder
