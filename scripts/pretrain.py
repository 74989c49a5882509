#!/usr/bin/env python
"""Pretrain one masked or report-aware method of cxrmim.registry (the `pretrain` rule); torchrun-compatible for DDP."""

from cxrmim.cli import run_main
from cxrmim.train.pretrain import main

if __name__ == "__main__":
    run_main(main)
