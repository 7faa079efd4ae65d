"""Smoke tests of the benchmarks in ``bench/`` (not named ``bench``: that would hide the real package)."""
