"""Light report transformer shared by the report-aware methods (MRM, MedIM): random init, nothing downloaded."""

from __future__ import annotations

import torch
from torch import nn


class ReportTransformer(nn.Module):
    """Token + learned position embeddings, an optional added context vector, pre-norm Transformer layers."""

    def __init__(self, vocab_size: int, max_length: int, embed_dim: int, depth: int, num_heads: int) -> None:
        super().__init__()
        self.token_embed = nn.Embedding(vocab_size, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, max_length, embed_dim))
        nn.init.normal_(self.pos_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(
            embed_dim, num_heads, dim_feedforward=4 * embed_dim, dropout=0.0, activation="gelu", batch_first=True,
            norm_first=True,
        )  # fmt: skip
        # enable_nested_tensor off: the padded layout stays the same in train and eval (and under compile).
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, ids: torch.Tensor, attention: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) ids and real-token flags (+ (B, D) context added to every token) -> (B, L, D) token features."""
        x = self.token_embed(ids) + self.pos_embed[:, : ids.shape[1]]
        if context is not None:
            x = x + context.unsqueeze(1)
        # An empty report would leave a row with no key to attend to (NaN): let it attend its first (pad) slot.
        first = torch.arange(ids.shape[1], device=ids.device) == 0
        padding = ~(attention | first)
        return self.norm(self.blocks(x, src_key_padding_mask=padding))


def whole_word_mask(word: torch.Tensor, ratio: float, generator: torch.Generator | None) -> torch.Tensor:
    """Mask whole words: each word of a report is masked with probability `ratio`, all its tokens together -> bool.

    `word` (B, L) holds each token's word index (-1 on padding); noise is drawn per (report, word slot) on the
    generator's device, so the result does not depend on the model's device.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.rand(word.shape, generator=generator, device=gen_device).to(word.device)
    picked = noise < ratio  # slot w decides for word w (a report has at most L words)
    return torch.gather(picked, 1, word.clamp_min(0)) & (word >= 0)


def masked_token_loss(logits: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Cross-entropy averaged over masked positions only (unmasked and padding positions score nothing).

    Returns (loss, number of masked tokens, number predicted correctly); fp32 even under autocast, no host sync.
    """
    per_token = nn.functional.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
    weight = masked.float()
    count = weight.sum()
    correct = ((logits.argmax(dim=-1) == targets).float() * weight).sum()
    return (per_token * weight).sum() / count.clamp_min(1.0), count, correct


def scored_token_loss(logits: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """`masked_token_loss` from the masked positions' rows alone: (K, V) logits and (K,) targets of the K True
    positions of `masked` (B, L) -> (loss, count, correct); equal to the full computation up to float rounding."""
    count = masked.float().sum()  # on the device: K itself would be a host int
    per_token = nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
    correct = (logits.argmax(dim=-1) == targets).float().sum()
    return per_token / count.clamp_min(1.0), count, correct
