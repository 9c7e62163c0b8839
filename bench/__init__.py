"""Benchmarks. Each prints JSON as its last line; none of them is a test."""
