"""Benchmarks of orderstream against the floors of the machine it runs on (issue 6).

`python -m bench <part> [flags]` runs one part (ingest, lookup, restart, memory, chart) or `all`;
each prints a table and writes `bench/results/<date>-<part>.json`. See README "Performance".
"""
