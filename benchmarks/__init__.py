"""Benchmarks: numbers for the README/docs, measured side by side with the bare clients in one run."""
