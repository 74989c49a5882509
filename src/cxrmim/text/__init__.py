"""Radiology reports as data: cleaning, sentences, WordPiece tokenizer and knowledge-word vocabulary."""
