"""WordPiece tokenizer learned from the training split's reports (HuggingFace `tokenizers`), and report tensors.

`encode_reports` turns reports into fixed-length per-image tensors the pretraining loader slices like images:
token ids, padding, the word and sentence each token belongs to (whole-word masking, MedIM's SDM) and whether it
lies inside a knowledge term (MedIM's KWM).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from cxrmim.io import atomic_path
from cxrmim.text.keywords import KnowledgeWords

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = [PAD, UNK, CLS, SEP, MASK]


def new_tokenizer(vocab: dict[str, int]) -> Tokenizer:
    """A BERT-style WordPiece tokenizer over `vocab`: lower-cased, accents stripped, split on spaces and punctuation."""
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token=UNK, max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


def word_counts(texts: Sequence[str]) -> Counter[str]:
    """Frequency of every normalised, pre-tokenised word (the tokenizer's own normaliser and pre-tokenizer)."""
    probe = new_tokenizer({UNK: 0})
    counts: Counter[str] = Counter()
    for text in texts:
        normalised = probe.normalizer.normalize_str(text)
        counts.update(word for word, _ in probe.pre_tokenizer.pre_tokenize_str(normalised))
    return counts


def train_tokenizer(texts: Sequence[str], vocab_size: int, min_frequency: int = 1) -> Tokenizer:
    """Learn a WordPiece vocabulary from `texts`: special tokens, every character (word-initial and `##`
    continuation), then whole words by frequency (ties alphabetical) while they fit `vocab_size`.

    The `tokenizers` WordPieceTrainer breaks ties by hash-map order, so two trainings on the same reports can
    differ (tests/test_text.py showed it); this vocabulary depends only on the texts. Words left out are split by
    WordPiece's greedy longest match into the pieces that are in. Nothing is downloaded.
    """
    counts = word_counts(texts)
    if not counts:
        raise ValueError("no report text to train the tokenizer on; the training split's reports are all empty")
    characters = sorted({c for word in counts for c in word})
    pieces = [*SPECIAL_TOKENS, *characters, *(f"##{c}" for c in characters)]
    if vocab_size < len(pieces):
        raise ValueError(f"text.vocab_size {vocab_size} is below the {len(pieces)} special and character tokens")
    words = sorted((w for w, n in counts.items() if n >= min_frequency and len(w) > 1), key=lambda w: (-counts[w], w))
    pieces += words[: vocab_size - len(pieces)]
    return new_tokenizer({piece: i for i, piece in enumerate(pieces)})


def save_tokenizer(tokenizer: Tokenizer, path: str | Path) -> None:
    """Write the tokenizer JSON atomically."""
    with atomic_path(path) as tmp:
        tokenizer.save(str(tmp))


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read a tokenizer JSON and check it has the special tokens the report models use."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: tokenizer file not found; run the tokenizer rule or fix text.tokenizer")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises a bare Exception for malformed files
        raise ValueError(f"{path}: not a HuggingFace tokenizers JSON file ({error})") from error
    missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
    if missing:
        raise ValueError(f"{path}: tokenizer lacks special tokens {missing}; train one with the tokenizer rule")
    return tokenizer


@dataclass
class ReportTensors:
    """Reports as (N, L) tensors; padding positions have attention False and word/sentence -1."""

    ids: torch.Tensor  # long token ids ([PAD] after the end)
    attention: torch.Tensor  # bool, True on real tokens
    word: torch.Tensor  # long, index of the word within its report (-1: padding)
    sentence: torch.Tensor  # long, index of the sentence within its report (-1: padding)
    keyword: torch.Tensor  # bool, the token lies inside a knowledge term

    def as_dict(self, prefix: str = "report_") -> dict[str, torch.Tensor]:
        """The tensors under loader keys (`report_ids`, ...)."""
        return {f"{prefix}{k}": getattr(self, k) for k in ("ids", "attention", "word", "sentence", "keyword")}


def sentence_starts(sentences: Sequence[str]) -> list[int]:
    """Character offset of each sentence in `" ".join(sentences)`."""
    starts, position = [], 0
    for sentence in sentences:
        starts.append(position)
        position += len(sentence) + 1
    return starts


def encode_reports(
    tokenizer: Tokenizer, reports: Sequence[Sequence[str]], max_length: int, knowledge: KnowledgeWords | None = None
) -> ReportTensors:
    """Tokenise each report (given as its sentences) to `max_length` tokens (truncated, padded); no special tokens."""
    n = len(reports)
    ids = torch.full((n, max_length), tokenizer.token_to_id(PAD), dtype=torch.long)
    attention = torch.zeros(n, max_length, dtype=torch.bool)
    word = torch.full((n, max_length), -1, dtype=torch.long)
    sentence = torch.full((n, max_length), -1, dtype=torch.long)
    keyword = torch.zeros(n, max_length, dtype=torch.bool)
    texts = [" ".join(s) for s in reports]
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    for row, (text, sentences, encoding) in enumerate(zip(texts, reports, encodings)):
        length = min(max_length, len(encoding.ids))
        if length == 0:
            continue
        starts = sentence_starts(sentences)
        spans = knowledge.spans(text) if knowledge is not None else []
        span_starts = [s for s, _ in spans]
        ids[row, :length] = torch.tensor(encoding.ids[:length])
        attention[row, :length] = True
        word[row, :length] = torch.tensor([w if w is not None else -1 for w in encoding.word_ids[:length]])
        for col, (begin, _) in enumerate(encoding.offsets[:length]):
            sentence[row, col] = bisect.bisect_right(starts, begin) - 1
            k = bisect.bisect_right(span_starts, begin) - 1
            keyword[row, col] = k >= 0 and begin < spans[k][1]
    return ReportTensors(ids, attention, word, sentence, keyword)
