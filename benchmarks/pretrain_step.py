#!/usr/bin/env python
"""Time one pretraining step (forward + backward + AdamW update) of MAE, RGMIM and RGMIM-lung masking, and the
report-aware methods (MRM, MedIM) next to MAE.

Prints images/s per model size and method and the overhead of the two region-guided maskings over MAE's random
masking in percent, on the current device, then MAE / MRM / MedIM images/s (48 report tokens, vocabulary 1000,
text model 64-d, 1 layer), then the MAE step as training runs it (autocast of the device, fused AdamW on CUDA)
plain, with activation checkpointing and with torch.compile (CUDA only, as in training): img/s and peak memory
(CUDA: peak allocated; CPU: peak resident set of the process during the steps).
    python benchmarks/pretrain_step.py --sizes cpu tiny --image-size 64 --patch-size 8 --batch-size 32
    python benchmarks/pretrain_step.py --sizes paper --batch-size 256 --tables variants   # ViT-B/16, 224 px
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from cxrmim.device import DeviceSetup, adamw, select_device
from cxrmim.models.mae import MaskedAutoencoder
from cxrmim.models.masking import METHOD_MASKING, lung_batch_masked

# encoder kwargs for vit_tiny_patch16_224 + decoder (embed_dim, depth, num_heads)
SIZES = {
    "cpu": ({"embed_dim": 128, "depth": 4, "num_heads": 4, "mlp_ratio": 3.0}, (96, 2, 4)),  # workflow default
    "tiny": ({"embed_dim": 192, "depth": 12, "num_heads": 3}, (128, 4, 4)),
    "small": ({"embed_dim": 384, "depth": 12, "num_heads": 6}, (256, 4, 8)),
    "base": ({"embed_dim": 768, "depth": 12, "num_heads": 12}, (512, 8, 16)),  # the paper's ViT-B + decoder
    "paper": ({"embed_dim": 768, "depth": 12, "num_heads": 12}, (512, 8, 16)),  # ViT-B/16 at 224 px (Table 1)
}
GEOMETRY = {"paper": (224, 16)}  # (image size, patch size) a size fixes; the others take --image-size/--patch-size
VARIANTS = ("plain", "checkpointing", "compile", "checkpointing+compile")


def geometry(size: str, args: argparse.Namespace) -> tuple[int, int]:
    """Image and patch size of one benchmark size."""
    return GEOMETRY.get(size, (args.image_size, args.patch_size))


def lung_validity(batch_size: int, grid: int, generator: torch.Generator) -> torch.Tensor:
    """Two jittered elliptic 'lungs' per image on the patch grid (about 40-50% of patches valid)."""
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    radius = grid * (0.18 + 0.08 * torch.rand(batch_size, 1, 1, generator=generator))
    valid = torch.zeros(batch_size, grid, grid, dtype=torch.bool)
    for centre in (0.3 * grid, 0.7 * grid):
        valid |= ((cols - centre) / radius) ** 2 + ((rows - grid / 2) / (1.6 * radius)) ** 2 <= 1
    return valid.flatten(1)


def synchronise(setup: DeviceSetup) -> None:
    """Wait for queued device work so wall-clock timings are honest."""
    if setup.device.type == "cuda":
        torch.cuda.synchronize(setup.device)


def time_steps(model: MaskedAutoencoder, setup: DeviceSetup, batch_size: int, warmup: int, repeats: int) -> float:
    """Images per second of full training steps, masking included (drawn per step, as in training)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator(device=setup.device).manual_seed(0)
    images = torch.randn(batch_size, 1, model.image_size, model.image_size, device=setup.device)
    valid = lung_validity(batch_size, model.grid_size, torch.Generator().manual_seed(0)).to(setup.device)
    # Training fixes lung_ratio's shared count once per run (no per-step device read); so does the benchmark.
    n_masked = lung_batch_masked(valid, model.mask_ratio) if model.masking_name == "lung_ratio" else None

    def step() -> None:
        plan = model.plan_masking(batch_size, valid, generator, setup.device, n_masked)
        with setup.autocast():
            loss, _, _ = model(images, plan=plan)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    synchronise(setup)
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    synchronise(setup)
    return batch_size * repeats / (time.perf_counter() - started)


REPORT_LENGTH, VOCAB = 48, 1000


def report_steps(encoder_cfg: dict, decoder: tuple[int, int, int], args: argparse.Namespace, setup: DeviceSetup):
    """name -> (model, loss closure) for MAE, MRM and MedIM (paper setting and the cheap one) on random data."""
    from cxrmim.models.medim import ReportGuidedMIM
    from cxrmim.models.mrm import MaskedRecordModel

    dec_dim, dec_depth, dec_heads = decoder
    text = {"embed_dim": 64, "depth": 1, "num_heads": 4}
    settings = {"decoder": {"embed_dim": dec_dim, "depth": dec_depth, "num_heads": dec_heads}, "norm_pix_loss": True,
                "mrm": {"text": text}, "medim": {"text": text}}  # fmt: skip
    device, batch = setup.device, args.batch_size
    generator = torch.Generator(device=device).manual_seed(0)
    images = torch.randn(batch, 1, args.image_size, args.image_size, device=device)
    ids = torch.randint(5, VOCAB, (batch, REPORT_LENGTH), device=device)
    attention = torch.ones(batch, REPORT_LENGTH, dtype=torch.bool, device=device)
    flags = torch.rand(batch, REPORT_LENGTH, device=device) < 0.3
    torch.manual_seed(0)
    mae = MaskedAutoencoder(encoder_cfg, args.image_size, args.patch_size, "random", args.mask_ratio, *decoder).to(
        device
    )
    mrm = MaskedRecordModel(encoder_cfg, args.image_size, args.patch_size, args.mask_ratio, settings, VOCAB,
                            REPORT_LENGTH, 4).to(device)  # fmt: skip
    steps = {"MAE": (mae, lambda: mae(images, None, generator)[0])}

    def mrm_loss() -> torch.Tensor:
        plan = mrm.mae.plan_masking(batch, None, generator, device)
        return mrm(images, plan, ids, attention, flags)[0]

    steps["MRM"] = (mrm, mrm_loss)
    for name, cheap in (("MedIM", False), ("MedIM-cheap", True)):
        medim_settings = dict(settings, medim={"text": text, "both_views": not cheap, "align_encoder_grad": not cheap})
        medim = ReportGuidedMIM(encoder_cfg, args.image_size, args.patch_size, args.mask_ratio, medim_settings, VOCAB,
                                REPORT_LENGTH).to(device)  # fmt: skip
        noise = torch.rand(batch, 2, 2, medim.mae.n_patches, device=device)
        steps[name] = (medim, lambda m=medim, n=noise: m(images, ids, attention, flags, flags, n)[0])
    return steps


def time_loss(model: torch.nn.Module, loss_fn, setup: DeviceSetup, batch_size: int, warmup: int, repeats: int) -> float:
    """Images per second of full training steps of any model whose loss `loss_fn` computes."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        with setup.autocast():
            loss = loss_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    synchronise(setup)
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    synchronise(setup)
    return batch_size * repeats / (time.perf_counter() - started)


class Checkpointed(nn.Module):
    """A transformer block whose activations are recomputed in the backward pass (as timm's grad checkpointing)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block, checkpointed while training."""
        if self.training and torch.is_grad_enabled():
            return checkpoint(self.block, x, use_reentrant=False)
        return self.block(x)


def checkpoint_blocks(model: MaskedAutoencoder) -> None:
    """Checkpoint every encoder and decoder block (the MAE calls them one by one, so wrap them in place)."""
    for blocks in (model.encoder.blocks, model.decoder_blocks):
        for index, block in enumerate(blocks):
            blocks[index] = Checkpointed(block)


def proc_status_mb(field: str) -> float:
    """One memory line of /proc/self/status (Linux), in MB."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(field + ":"))) / 1024


def reset_peak_memory(setup: DeviceSetup) -> float:
    """Start a peak measurement; returns the baseline (CUDA: 0; CPU: the resident set now, MB)."""
    if setup.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(setup.device)
        return 0.0
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak resident set (VmHWM) to the current one
    return proc_status_mb("VmRSS")


def peak_memory_mb(setup: DeviceSetup, baseline: float) -> float:
    """CUDA: peak allocated MB (model, optimizer state, activations). CPU: peak resident set above the baseline
    (what the steps add: activations, gradients, optimizer state; the model and torch itself are in the baseline)."""
    if setup.device.type == "cuda":
        return torch.cuda.max_memory_allocated(setup.device) / 2**20
    return proc_status_mb("VmHWM") - baseline


def time_variant(size: str, variant: str, args: argparse.Namespace, setup: DeviceSetup) -> tuple[float, float]:
    """(img/s, peak memory MB) of the MAE training step of one size in one variant."""
    encoder_kwargs, decoder = SIZES[size]
    image_size, patch_size = geometry(size, args)
    torch.manual_seed(0)
    model = MaskedAutoencoder({"timm_name": "vit_tiny_patch16_224", "kwargs": encoder_kwargs}, image_size,
                              patch_size, "random", args.mask_ratio, *decoder).to(setup.device)  # fmt: skip
    if "checkpointing" in variant:
        checkpoint_blocks(model)
    step_model = torch.compile(model) if "compile" in variant else model
    optimizer = adamw([p for p in model.parameters() if p.requires_grad], setup, lr=1e-4)
    generator = torch.Generator(device=setup.device).manual_seed(0)
    images = torch.randn(args.batch_size, 1, image_size, image_size, device=setup.device)

    def step() -> None:
        with setup.autocast():
            loss = step_model(images, None, generator)[0]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    baseline = reset_peak_memory(setup)  # before the first step: optimizer state and gradients count
    for _ in range(args.warmup):  # also compiles
        step()
    synchronise(setup)
    started = time.perf_counter()
    for _ in range(args.repeats):
        step()
    synchronise(setup)
    rate = args.batch_size * args.repeats / (time.perf_counter() - started)
    peak = peak_memory_mb(setup, baseline)
    return rate, peak


def print_variants(args: argparse.Namespace, setup: DeviceSetup) -> None:
    """The MAE step per size and variant: img/s and peak memory."""
    print(f"\nMAE step, batch {args.batch_size}, autocast {setup.autocast_dtype}")
    memory = "peak MB" if setup.device.type == "cuda" else "peak MB (above RSS before)"
    print(f"{'size':>6} {'image':>6} {'variant':>22} {'img/s':>10} {memory:>10}")
    for size in args.sizes:
        image_size, patch_size = geometry(size, args)
        for variant in args.variants:
            if "compile" in variant and setup.device.type != "cuda":
                skipped = "skipped: training compiles on CUDA only"
                print(f"{size:>6} {f'{image_size}/{patch_size}':>6} {variant:>22}   {skipped}")
                continue
            rate, peak = time_variant(size, variant, args, setup)
            print(f"{size:>6} {f'{image_size}/{patch_size}':>6} {variant:>22} {rate:>10.1f} {peak:>10.0f}")


def main() -> None:
    """Run the benchmark grid and print a table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["cpu", "tiny"], choices=sorted(SIZES))
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds; the best is reported")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-report-methods", action="store_true", help="skip the MAE / MRM / MedIM comparison")
    parser.add_argument(
        "--tables",
        nargs="+",
        default=["masking", "report", "variants"],
        choices=["masking", "report", "variants"],
        help="which of the three tables to print",
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args()
    setup = select_device(args.device)
    print(f"device {setup.device}, image {args.image_size}px, patch {args.patch_size}, batch {args.batch_size}")
    if "masking" in args.tables:
        print_masking(args, setup)
    if "report" in args.tables and not args.no_report_methods:
        print_report_methods(args, setup)
    if "variants" in args.tables:
        print_variants(args, setup)


def print_masking(args: argparse.Namespace, setup: DeviceSetup) -> None:
    """Images/s of RGMIM, RGMIM-lung and MAE masking per size, and the overhead over MAE."""
    methods = list(METHOD_MASKING)  # rgmim, rgmim-lung, mae
    print(f"{'size':>6} {'params':>10} " + " ".join(f"{m + ' img/s':>17}" for m in methods) + " overhead vs mae")
    for size in args.sizes:
        encoder_kwargs, (dec_dim, dec_depth, dec_heads) = SIZES[size]
        encoder_cfg = {"timm_name": "vit_tiny_patch16_224", "kwargs": encoder_kwargs}
        models = {}
        image_size, patch_size = geometry(size, args)
        for method in methods:
            torch.manual_seed(0)
            models[method] = MaskedAutoencoder(
                encoder_cfg, image_size, patch_size, METHOD_MASKING[method], args.mask_ratio,
                dec_dim, dec_depth, dec_heads,
            ).to(setup.device)  # fmt: skip
        # Alternate the methods and keep each one's best round: shared machines make single timings noisy.
        throughput = dict.fromkeys(models, 0.0)
        for _ in range(args.rounds):
            for name, model in models.items():
                throughput[name] = max(
                    throughput[name], time_steps(model, setup, args.batch_size, args.warmup, args.repeats)
                )
        params = sum(p.numel() for p in model.parameters())
        rates = " ".join(f"{throughput[m]:>17.1f}" for m in methods)
        overheads = ", ".join(
            f"{m} {100 * (throughput['mae'] / throughput[m] - 1):+.1f}%" for m in methods if m != "mae"
        )
        print(f"{size:>6} {params:>10,} {rates} {overheads}")


def print_report_methods(args: argparse.Namespace, setup: DeviceSetup) -> None:
    """Images/s of MAE, MRM and MedIM (both settings) per size."""
    print(f"\n{'size':>6} " + " ".join(f"{name + ' img/s':>17}" for name in ("MAE", "MRM", "MedIM", "MedIM-cheap")))
    for size in args.sizes:
        encoder_kwargs, decoder = SIZES[size]
        image_size, patch_size = geometry(size, args)
        sized = argparse.Namespace(**{**vars(args), "image_size": image_size, "patch_size": patch_size})
        steps = report_steps({"timm_name": "vit_tiny_patch16_224", "kwargs": encoder_kwargs}, decoder, sized, setup)
        throughput = dict.fromkeys(steps, 0.0)
        for _ in range(args.rounds):
            for name, (model, loss_fn) in steps.items():
                rate = time_loss(model, loss_fn, setup, args.batch_size, args.warmup, args.repeats)
                throughput[name] = max(throughput[name], rate)
        print(f"{size:>6} " + " ".join(f"{throughput[name]:>17.1f}" for name in steps))


if __name__ == "__main__":
    main()
