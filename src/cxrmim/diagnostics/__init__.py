"""Measurements of what a model learned, shared by benchmarks/ and the tests (no stage runs them)."""
