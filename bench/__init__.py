"""Benchmarks of prefect-scenario (not tests): overhead, polling cost, memory, scale.

Run ``python -m bench`` (``make bench``); see ``bench/README.md``.
"""
