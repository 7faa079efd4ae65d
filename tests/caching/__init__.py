"""Tests of ``prefect_scenario.caching``: the cache keys of uploads, jobs and downloads."""
