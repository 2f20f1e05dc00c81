"""Helpers of bench/core_bench.py: crashers that make real cores, and the fresh-process probe.

A package (not bench/*.py files) so that `./dev bench`, which runs every bench/*.py, runs only
the benchmark itself.
"""
