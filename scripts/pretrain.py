#!/usr/bin/env python
"""Pretrain a ViT masked autoencoder, RGMIM, RGMIM-lung or MAE (the `pretrain` rule); torchrun-compatible for DDP."""

from cxrmim.cli import run_main
from cxrmim.train.pretrain import main

if __name__ == "__main__":
    run_main(main)
