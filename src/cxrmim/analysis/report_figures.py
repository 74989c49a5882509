"""Figures of the report-aware methods: MRM's masked image and report beside their reconstructions, and MedIM's
report-guided (KWM, SDM) masks over the image with the knowledge words of the report highlighted."""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from cxrmim import registry  # noqa: E402
from cxrmim.analysis.pretrain_figures import Examples, grey_out, load_examples  # noqa: E402
from cxrmim.data.tensors import PIXEL_MEAN, PIXEL_STD, normalise  # noqa: E402
from cxrmim.models.medim import ReportGuidedMIM, choose_sentences, min_sentence_words  # noqa: E402
from cxrmim.models.mrm import MaskedRecordModel, downsample, patchify  # noqa: E402
from cxrmim.models.report_text import whole_word_mask  # noqa: E402
from cxrmim.text.keywords import knowledge_words  # noqa: E402
from cxrmim.text.reports import load_reports  # noqa: E402
from cxrmim.text.tokenizer import MASK, encode_reports, load_tokenizer  # noqa: E402

log = logging.getLogger(__name__)

FIGURE_SEED = 0
MRM_FLAGS = {m.name: dict(m.options) for m in registry.METHODS if m.figure == "mrm_reconstructions"}


def run_recipe(path: Path) -> tuple[str, dict[str, Any]]:
    """(method, signature) stored in a report-aware autoencoder file's metadata."""
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    for family in ("mrm", "medim"):
        if family in meta:
            recipe = json.loads(meta[family])
            return recipe["method"], recipe["signature"]
    raise ValueError(f"{path}: not an MRM or MedIM autoencoder file; re-run its pretrain rule")


def load_report_model(path: Path, tokenizer) -> tuple[str, torch.nn.Module, dict[str, Any]]:
    """Rebuild an MRM or MedIM model from autoencoder.safetensors -> (method, model in eval mode, signature)."""
    method, sig = run_recipe(path)
    args = (sig["encoder"], sig["image_size"], sig["patch_size"], sig["mask_ratio"], sig["settings"])
    vocab, length = tokenizer.get_vocab_size(), int(sig["text"]["max_length"])
    if method == "medim":
        model = ReportGuidedMIM(*args, vocab, length)
    else:
        model = MaskedRecordModel(*args, vocab, length, tokenizer.token_to_id(MASK), **MRM_FLAGS[method])
    model.load_state_dict(load_file(str(path)), strict=True)
    return method, model.eval(), sig


def example_reports(prepared_dir: Path, split_csv: Path, examples_n: int, validity: Path, tokenizer, text: dict):
    """The figure's test images with their report tensors and report sentences."""
    import pandas as pd

    examples = load_examples(prepared_dir, split_csv, validity, examples_n)
    split = pd.read_csv(split_csv, keep_default_na=False)
    test = split[split["part"] == "test"].sort_values("index")
    first = test.groupby("label").head(1)
    indices = pd.concat([first, test.drop(first.index)]).head(examples_n)["index"].tolist()  # as load_examples
    records = {r["index"]: r for r in load_reports(prepared_dir / "reports.jsonl")}
    sentences = [records[i]["sentences"] for i in indices]
    return examples, encode_reports(tokenizer, sentences, int(text["max_length"]), knowledge_words(text))


def to_unit(x: torch.Tensor) -> np.ndarray:
    """Normalised images -> 0..1 numpy (B, H, W)."""
    return (x * PIXEL_STD + PIXEL_MEAN).clamp(0, 1)[:, 0].numpy()


def token_text(tokenizer, ids: list[int], flags: list[bool], marker: str) -> str:
    """Tokens joined as text, the flagged ones wrapped in `marker` (WordPiece '##' pieces glued on)."""
    words = []
    for token_id, flag in zip(ids, flags):
        token = tokenizer.id_to_token(token_id)
        piece = token.removeprefix("##")
        piece = f"{marker}{piece}{marker}" if flag else piece
        if token.startswith("##") and words:
            words[-1] += piece
        else:
            words.append(piece)
    return textwrap.fill(" ".join(words), 38)


@torch.no_grad()
def plot_mrm(
    model: MaskedRecordModel, examples: Examples, reports, tokenizer, title: str, path: Path, dpi: int
) -> None:
    """Per image: original, masked low-res input, reconstruction; masked report and restored words."""
    x = normalise(torch.from_numpy(examples.images))
    generator = torch.Generator().manual_seed(FIGURE_SEED)
    plan = model.mae.plan_masking(len(x), None, generator, x.device)
    words = whole_word_mask(reports.word, 0.5, generator)
    _, _, _, pred = model(x, plan, reports.ids, reports.attention, words)  # the restored words come from logits below
    p = 2 * model.patch_size if model.super_resolution else model.patch_size
    source = x if model.super_resolution else downsample(x)
    target = patchify(source, p)
    if model.mae.norm_pix_loss:
        pred = pred * (target.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5 + target.mean(dim=-1, keepdim=True)
    pasted = target * (1 - plan.mask.unsqueeze(-1)) + pred * plan.mask.unsqueeze(-1)
    grid, size = model.mae.grid_size, source.shape[-1]
    recon = pasted.reshape(len(x), grid, grid, p, p).permute(0, 1, 3, 2, 4).reshape(len(x), 1, size, size)
    low = to_unit(downsample(x))
    logits = None
    if model.report_loss:
        context = model.image_to_text(model.mae.forward_encoder(downsample(x), plan)[:, model.mae.n_prefix :].mean(1))
        inputs = torch.where(words, torch.full_like(reports.ids, model.mask_id), reports.ids)
        logits = model.text_head(model.text(inputs, reports.attention, context))
    n = len(x)
    fig, axes = plt.subplots(
        n, 5, figsize=(14, 2.6 * n), squeeze=False, gridspec_kw={"width_ratios": [1, 1, 1, 1.6, 1.6]}
    )
    for row in range(n):
        real = reports.attention[row]
        ids, masked = reports.ids[row][real].tolist(), words[row][real].tolist()
        panels = [(examples.images[row] / 255.0, f"original\n{examples.labels[row]}"),
                  (grey_out(low[row], plan.mask[row].numpy(), model.patch_size), "masked input (1/2 res)"),
                  (to_unit(recon)[row], "reconstruction" + (" (full res)" if model.super_resolution else ""))]  # fmt: skip
        for col, (panel, name) in enumerate(panels):
            axes[row, col].imshow(panel, cmap="gray", vmin=0, vmax=1)
            axes[row, col].set_title(name, fontsize=7)
        shown = [tokenizer.token_to_id(MASK) if m else i for i, m in zip(ids, masked)]
        texts = [("masked report", token_text(tokenizer, shown, [False] * len(ids), ""))]
        if logits is not None:
            restored = [int(a) if m else i for i, m, a in zip(ids, masked, logits[row][real].argmax(-1).tolist())]
            texts.append(("restored (*predicted*)", token_text(tokenizer, restored, masked, "*")))
        for col, (name, text) in enumerate(texts, start=3):
            axes[row, col].text(
                0, 1, text, fontsize=7, va="top", family="monospace", transform=axes[row, col].transAxes
            )
            axes[row, col].set_title(name, fontsize=7)
        for ax in axes[row]:
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


@torch.no_grad()
def plot_medim(model: ReportGuidedMIM, examples: Examples, reports, tokenizer, title: str, path: Path,
               dpi: int, min_words: int) -> None:  # fmt: skip
    """Per image: original, KWM score map, KWM mask, SDM mask; the report with KNOWLEDGE WORDS in capitals and the
    SDM sentence in [brackets]."""
    x = normalise(torch.from_numpy(examples.images))
    generator = torch.Generator().manual_seed(FIGURE_SEED)
    attn, _ = model.align(x, reports.ids, reports.attention)
    sentence_noise = torch.rand(reports.ids.shape, generator=generator)
    in_sentence = choose_sentences(reports.sentence, reports.word, min_words, sentence_noise)
    mask_noise = torch.rand(len(x), 2, 2, model.mae.n_patches, generator=generator)
    kwm, sdm = model.plans(attn, reports.keyword, in_sentence, mask_noise)
    scores = torch.einsum("bln,bl->bn", attn, reports.keyword.float())
    grid, n = model.mae.grid_size, len(x)
    fig, axes = plt.subplots(n, 5, figsize=(14, 2.6 * n), squeeze=False, gridspec_kw={"width_ratios": [1, 1, 1, 1, 2]})
    for row in range(n):
        image = examples.images[row]
        axes[row, 0].imshow(image / 255.0, cmap="gray", vmin=0, vmax=1)
        axes[row, 0].set_title(f"original\n{examples.labels[row]}", fontsize=7)
        axes[row, 1].imshow(image / 255.0, cmap="gray", vmin=0, vmax=1)
        heat = np.kron(scores[row].reshape(grid, grid).numpy(), np.ones((model.mae.patch_size,) * 2))
        axes[row, 1].imshow(heat, cmap="magma", alpha=0.55)
        axes[row, 1].set_title("knowledge-word attention", fontsize=7)
        for col, (name, plan) in enumerate((("KWM mask", kwm), ("SDM mask", sdm)), start=2):
            axes[row, col].imshow(
                grey_out(image, plan.mask[row].numpy(), model.mae.patch_size), cmap="gray", vmin=0, vmax=1
            )
            axes[row, col].set_title(name, fontsize=7)
        real = reports.attention[row]
        ids = reports.ids[row][real].tolist()
        keyword, chosen = reports.keyword[row][real].tolist(), in_sentence[row][real].tolist()
        # Capitals for knowledge words: re-render token by token so that WordPiece pieces stay glued.
        pieces: list[str] = []
        previous_chosen = False
        for token_id, is_key, is_chosen in zip(ids, keyword, chosen):
            token = tokenizer.id_to_token(token_id)
            piece = token.removeprefix("##")
            piece = piece.upper() if is_key else piece
            if is_chosen and not previous_chosen:
                piece = "[" + piece
            if previous_chosen and not is_chosen and pieces:
                pieces[-1] += "]"
            previous_chosen = is_chosen
            if token.startswith("##") and pieces:
                pieces[-1] += piece
            else:
                pieces.append(piece)
        if previous_chosen and pieces:
            pieces[-1] += "]"
        axes[row, 4].text(0, 1, textwrap.fill(" ".join(pieces), 52), fontsize=7, va="top", family="monospace",
                          transform=axes[row, 4].transAxes)  # fmt: skip
        axes[row, 4].set_title("report: KNOWLEDGE WORDS, [SDM sentence]", fontsize=7)
        for ax in axes[row]:
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def make_report_figures(prepared_dir: str | Path, split_csv: str | Path, validity_npz: str | Path,
                        tokenizer_path: str | Path, run_dirs: list[str | Path], text: dict[str, Any],
                        out_dir: str | Path, plots: dict[str, Any]) -> list[Path]:  # fmt: skip
    """mrm_reconstructions.png (first MRM-family run) and medim_masks.png (first MedIM run), for the runs given."""
    tokenizer = load_tokenizer(tokenizer_path)
    dpi, n = int(plots.get("dpi", 110)), int(plots.get("n_examples", 4))
    examples, reports = example_reports(Path(prepared_dir), Path(split_csv), n, Path(validity_npz), tokenizer, text)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for run in map(Path, run_dirs):
        method, model, signature = load_report_model(run / "autoencoder.safetensors", tokenizer)
        if method == "medim":
            path = out_dir / "medim_masks.png"
            plot_medim(
                model,
                examples,
                reports,
                tokenizer,
                f"MedIM report-guided masks ({run.name})",
                path,
                dpi,
                min_sentence_words(signature["settings"]),
            )
        else:
            path = out_dir / "mrm_reconstructions.png"
            plot_mrm(
                model, examples, reports, tokenizer, f"MRM: image and report reconstruction ({run.name})", path, dpi
            )
        written.append(path)
    log.info("wrote %s", ", ".join(map(str, written)))
    return written
