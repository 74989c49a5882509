"""Does MedIM's word-to-patch alignment find the lesion? A short training on phantoms, then KWM vs random masking.

Shared by benchmarks/medim_alignment.py and tests/test_medim.py: phantom images with their tokenised reports and
per-patch lesion maps, a short training of `ReportGuidedMIM` (its alignment loss alone or the whole MedIM loss), and
the share of lesion patches KWM masks next to random masking at the same ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tokenizers import Tokenizer

from cxrmim.data.patches import patch_coverage
from cxrmim.data.synthetic import PhantomSettings, generate_dataset
from cxrmim.data.tensors import normalise
from cxrmim.models.masking import guided_plan, masked_count, random_masking
from cxrmim.models.medim import ReportGuidedMIM, choose_sentences, kwm_scores
from cxrmim.text.keywords import KnowledgeWords, knowledge_words
from cxrmim.text.reports import clean_report, split_sentences
from cxrmim.text.tokenizer import ReportTensors, encode_reports, train_tokenizer


@dataclass
class PhantomReports:
    """Phantom images (normalised), their report tensors and which patches hold the reported lesion."""

    images: torch.Tensor  # float (N, 1, S, S)
    reports: ReportTensors
    lesion: torch.Tensor  # bool (N, n_patches): the patch overlaps the phantom's lesion mask
    labels: list[str]  # true class of each phantom
    tokenizer: Tokenizer

    def of_classes(self, classes: set[str]) -> PhantomReports:
        """The phantoms whose true class is in `classes`."""
        rows = torch.tensor([i for i, label in enumerate(self.labels) if label in classes], dtype=torch.long)
        r = self.reports
        reports = ReportTensors(r.ids[rows], r.attention[rows], r.word[rows], r.sentence[rows], r.keyword[rows])
        labels = [self.labels[i] for i in rows.tolist()]
        return PhantomReports(self.images[rows], reports, self.lesion[rows], labels, self.tokenizer)


def phantom_reports(settings: PhantomSettings, patch_size: int, max_length: int, tokenizer: Tokenizer | None = None,
                    vocab_size: int = 1000, knowledge: KnowledgeWords | None = None, min_frequency: int = 1) -> PhantomReports:  # fmt: skip
    """Render phantoms, tokenise their cleaned reports (a tokenizer trained on them unless one is given)."""
    data = generate_dataset(settings)
    sentences = [split_sentences(clean_report(text)) for text in data["reports"]]
    if tokenizer is None:
        tokenizer = train_tokenizer([" ".join(s) for s in sentences], vocab_size, min_frequency)
    reports = encode_reports(tokenizer, sentences, max_length, knowledge or knowledge_words({}))
    lesion = patch_coverage(torch.from_numpy(data["lesions"]), patch_size) > 0
    return PhantomReports(normalise(torch.from_numpy(data["images"])), reports, lesion, data["true_labels"], tokenizer)


def train_alignment(model: ReportGuidedMIM, data: PhantomReports, epochs: int, batch_size: int, lr: float,
                    seed: int, whole_model: bool = False, min_sentence_words: int = 3) -> None:  # fmt: skip
    """AdamW on the alignment loss alone, or with `whole_model` on MedIM's whole loss (reconstructions too)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.05)
    model.train()
    n, reports = len(data.images), data.reports
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):  # full batches: one shape, contrastive losses alike
            rows = order[start : start + batch_size]
            images, ids, attention = data.images[rows], reports.ids[rows], reports.attention[rows]
            if whole_model:
                noise = torch.rand(batch_size, ids.shape[1], generator=generator)
                sentence = choose_sentences(reports.sentence[rows], reports.word[rows], min_sentence_words, noise)
                mask_noise = torch.rand(batch_size, 2, 2, model.mae.n_patches, generator=generator)
                loss = model(images, ids, attention, reports.keyword[rows], sentence, mask_noise)[0]
            else:
                loss = model.align(images, ids, attention, reports.keyword[rows])[1]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    model.eval()


@torch.no_grad()
def lesion_masking_rates(model: ReportGuidedMIM, data: PhantomReports, mask_ratio: float, seed: int,
                         batch_size: int = 64) -> tuple[float, float]:  # fmt: skip
    """Share of all lesion patches that KWM masks and that random masking masks, `mask_ratio` of patches each."""
    generator = torch.Generator().manual_seed(seed)
    n_patches = data.lesion.shape[1]
    n_masked = masked_count(n_patches, mask_ratio)
    kwm_hits = random_hits = 0.0
    for start in range(0, len(data.images), batch_size):
        rows = slice(start, start + batch_size)
        attention, _ = model.align(data.images[rows], data.reports.ids[rows], data.reports.attention[rows])
        noise = torch.rand(attention.shape[0], 2, n_patches, generator=generator)
        scores = kwm_scores(attention, data.reports.keyword[rows])
        kwm = guided_plan(scores, noise, n_masked, model.high, model.low).mask.bool()
        random = random_masking(attention.shape[0], n_patches, mask_ratio, None, generator).mask.bool()
        lesion = data.lesion[rows]
        kwm_hits += float((kwm & lesion).sum())
        random_hits += float((random & lesion).sum())
    total = float(data.lesion.sum())
    if total == 0:
        raise ValueError("no lesion patches among these phantoms; use a class balance with lesion classes")
    return kwm_hits / total, random_hits / total
