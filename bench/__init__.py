"""Benchmarks of orderstream against the floors of the machine it runs on (issue 6).

`python -m bench <part> [flags]` runs one part (ingest, lookup, restart, memory, chart) or `all`;
each prints a table and writes `bench/results/<date>-<part>.json`. See README "Performance".

- the CLI: ``__main__.py`` (parts and flags), ``report.py`` (results, tables), ``chart.py``;
- the lab, ``lab/``: the stack's databases and topics (``lab/__init__.py``), worker processes
  (``worker.py``, ``warm.py``), load generators (``load.py``, wrk), profiles, the floors
  (``faust_floor_app.py``, ``floor_server.py``) and the naive design (``naive.py``);
- the parts, ``parts/``: ingest, lookup, memory, restart, soak.

Helpers shared with the tests come from ``harness.py`` at the top of the repository.
"""
