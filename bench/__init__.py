"""Benchmarks (`make bench`): each compares its candidates side by side in one run and
writes its table to docs/benchmarks.md."""
