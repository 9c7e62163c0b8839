"""Asya handler runtime. Kept importable by tests; the operator ships runtime.py alone."""

__all__: list[str] = []
