#!/usr/bin/env python
"""Does MedIM's learned word-to-patch alignment find the lesion? Train on phantoms, then KWM vs random masking.

Trains ReportGuidedMIM from random init with the default config's MedIM settings, encoder and phantoms (rendered at
the prepared image size) for a short CPU run: its whole loss (KWM/SDM reconstructions + alignment), or with
--align-only the alignment loss alone. Then, on held-out phantoms, prints the share of lesion patches (from the
phantoms' lesion masks) that KWM masks and that random masking masks at the same ratio, for the focal
Lung_Opacity lesions and for all lesion classes:
    OMP_NUM_THREADS=1 python benchmarks/medim_alignment.py
"""

from __future__ import annotations

import argparse
import time

import torch

from cxrmim.config import load_config
from cxrmim.data.synthetic import FINDINGS, PhantomSettings
from cxrmim.diagnostics.lesion_masking import lesion_masking_rates, phantom_reports, train_alignment
from cxrmim.models.medim import ReportGuidedMIM
from cxrmim.text.keywords import knowledge_words


def main() -> None:
    """Train, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-images", type=int, default=1280, help="the default run pretrains on ~1,280 images")
    parser.add_argument("--test-images", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's pretrain.epochs")
    parser.add_argument("--mask-ratio", type=float, default=0.5, help="MedIM's median rule masks about half")
    parser.add_argument("--align-only", action="store_true", help="train the alignment loss alone (faster)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--config", nargs="*", default=[], help="config files merged over the default")
    args = parser.parse_args()
    config = load_config(*args.config)
    pre, text, synthetic = config["pretrain"], config["text"], config["dataset"]["synthetic"]
    size, patch = int(config["prepare"]["image_size"]), int(config["patch_validity"]["patch_size"])
    encoder_cfg = config["encoders"][pre["encoder"]]
    knowledge = knowledge_words(text)
    lr = float(pre["base_lr"]) * int(pre["batch_size"]) / 256  # the loop's peak lr (no warmup or decay here)
    epochs = args.epochs or int(pre["epochs"])
    print(f"{'align loss' if args.align_only else 'whole MedIM loss'}, encoder {pre['encoder']}, {size} px, patch "
          f"{patch}, {args.train_images} training phantoms x {epochs} epochs, batch {pre['batch_size']}, lr {lr:g}, "
          f"align_encoder_grad {pre['medim'].get('align_encoder_grad', True)}, mask ratio {args.mask_ratio}")  # fmt: skip
    print(f"{'seed':>4} {'train s':>8} {'focal KWM':>10} {'focal random':>13} {'all KWM':>8} {'all random':>11}")
    for seed in args.seeds:
        phantoms = {**synthetic, "image_size": size}
        train = phantom_reports(PhantomSettings.from_config({**phantoms, "n_images": args.train_images, "seed": seed}),
                                patch, int(text["max_length"]), vocab_size=int(text["vocab_size"]), knowledge=knowledge,
                                min_frequency=int(text["min_frequency"]))  # fmt: skip
        test = phantom_reports(PhantomSettings.from_config({**phantoms, "n_images": args.test_images, "seed": 1000 + seed}),
                               patch, int(text["max_length"]), tokenizer=train.tokenizer, knowledge=knowledge)  # fmt: skip
        torch.manual_seed(seed)
        model = ReportGuidedMIM(encoder_cfg, size, patch, args.mask_ratio, pre, train.tokenizer.get_vocab_size(),
                                int(text["max_length"]))  # fmt: skip
        started = time.perf_counter()
        train_alignment(model, train, epochs, int(pre["batch_size"]), lr, seed, whole_model=not args.align_only,
                        min_sentence_words=int(pre["medim"].get("min_sentence_words", 3)))  # fmt: skip
        seconds = time.perf_counter() - started
        focal = lesion_masking_rates(model, test.of_classes({"Lung_Opacity"}), args.mask_ratio, seed)
        every = lesion_masking_rates(model, test.of_classes(set(FINDINGS)), args.mask_ratio, seed)
        print(f"{seed:>4} {seconds:>8.0f} {focal[0]:>10.1%} {focal[1]:>13.1%} {every[0]:>8.1%} {every[1]:>11.1%}")


if __name__ == "__main__":
    main()
