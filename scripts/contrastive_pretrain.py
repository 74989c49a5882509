#!/usr/bin/env python
"""Pretrain a backbone with SimSiam, BYOL, SKD or Cross (the `contrastive_pretrain` rule); torchrun-compatible."""

from cxrmim.cli import run_main
from cxrmim.train.contrastive import main

if __name__ == "__main__":
    run_main(main)
