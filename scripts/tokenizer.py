#!/usr/bin/env python
"""Train the WordPiece report tokenizer on the training split's reports (the `tokenizer` rule)."""

from cxrmim.cli import run_main
from cxrmim.text.stage import main

if __name__ == "__main__":
    run_main(main)
