#!/usr/bin/env python
"""Pretrain a backbone with SimSiam or BYOL (the `contrastive_pretrain` rule); torchrun-compatible for DDP."""

from cxrmim.cli import run_main
from cxrmim.registry import JOINT
from cxrmim.train.pretrain import main

if __name__ == "__main__":
    run_main(lambda: main(family=JOINT))
