#!/usr/bin/env python
"""Time one pretraining step (forward + backward + AdamW update) of MAE, RGMIM and RGMIM-lung masking.

Prints images/s per model size and method, and the overhead of the two region-guided maskings over MAE's
random masking in percent, on the current device:
    python benchmarks/pretrain_step.py --sizes cpu tiny --image-size 64 --patch-size 8 --batch-size 32
"""

from __future__ import annotations

import argparse
import time

import torch

from cxrmim.device import DeviceSetup, select_device
from cxrmim.models.mae import MaskedAutoencoder
from cxrmim.models.masking import METHOD_MASKING, lung_batch_masked

# encoder kwargs for vit_tiny_patch16_224 + decoder (embed_dim, depth, num_heads)
SIZES = {
    "cpu": ({"embed_dim": 128, "depth": 4, "num_heads": 4, "mlp_ratio": 3.0}, (96, 2, 4)),  # workflow default
    "tiny": ({"embed_dim": 192, "depth": 12, "num_heads": 3}, (128, 4, 4)),
    "small": ({"embed_dim": 384, "depth": 12, "num_heads": 6}, (256, 4, 8)),
    "base": ({"embed_dim": 768, "depth": 12, "num_heads": 12}, (512, 8, 16)),  # the paper's ViT-B + decoder
}


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
    args = parser.parse_args()
    setup = select_device(args.device)
    print(f"device {setup.device}, image {args.image_size}px, patch {args.patch_size}, batch {args.batch_size}")
    methods = list(METHOD_MASKING)  # rgmim, rgmim-lung, mae
    print(f"{'size':>6} {'params':>10} " + " ".join(f"{m + ' img/s':>17}" for m in methods) + " overhead vs mae")
    for size in args.sizes:
        encoder_kwargs, (dec_dim, dec_depth, dec_heads) = SIZES[size]
        encoder_cfg = {"timm_name": "vit_tiny_patch16_224", "kwargs": encoder_kwargs}
        models = {}
        for method in methods:
            torch.manual_seed(0)
            models[method] = MaskedAutoencoder(
                encoder_cfg, args.image_size, args.patch_size, METHOD_MASKING[method], args.mask_ratio,
                dec_dim, dec_depth, dec_heads,
            ).to(setup.device)  # fmt: skip
        # Alternate the methods and keep each one's best round: shared machines make single timings noisy.
        throughput = {name: 0.0 for name in models}
        for _ in range(args.rounds):
            for name, model in models.items():
                throughput[name] = max(
                    throughput[name], time_steps(model, setup, args.batch_size, args.warmup, args.repeats)
                )
        params = sum(p.numel() for p in model.parameters())
        rates = " ".join(f"{throughput[m]:>17.1f}" for m in methods)
        overheads = ", ".join(f"{m} {100 * (throughput['mae'] / throughput[m] - 1):+.1f}%" for m in methods if m != "mae")
        print(f"{size:>6} {params:>10,} {rates} {overheads}")


if __name__ == "__main__":
    main()
