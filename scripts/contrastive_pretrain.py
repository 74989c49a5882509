#!/usr/bin/env python
"""Pretrain a backbone with a joint-embedding method of cxrmim.registry (SimSiam, BYOL, SKD, Cross; the `contrastive_pretrain` rule); DDP-ready."""

from cxrmim.cli import run_main
from cxrmim.registry import JOINT
from cxrmim.train.pretrain import main

if __name__ == "__main__":
    run_main(lambda: main(family=JOINT))
