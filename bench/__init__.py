"""`make bench`: side-by-side figures for Airlock on one local Temporal dev server.

Entry point: `python -m bench.run [--quick]`. Nothing here asserts on time; it measures and prints.
"""
