"""Benchmarks: our serving runtime side by side with a naive bring-your-own baseline and the in-process floor.

Run everything with `python -m bench` (or `python -m bench --quick`); see bench/PERFORMANCE.md.
"""
