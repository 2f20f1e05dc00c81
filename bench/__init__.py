"""Benchmarks (not tests): each prints a table with a ratio against a named peer."""
