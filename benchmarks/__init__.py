"""Soleil's benchmarks: the peer-harness adapter (bench_soleil.py) and Soleil's own suite (suite.py)."""
