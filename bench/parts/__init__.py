"""The parts of `python -m bench`, one module each: ingest, lookup, memory, restart, soak."""
