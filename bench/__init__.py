"""Benchmarks of chatwright: start-up time, the turn path, storage and memory.

`python -m bench.run` runs them side by side and prints one table
(docs/performance.md has the latest one and how it was made).
"""
