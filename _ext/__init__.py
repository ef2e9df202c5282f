"""Cython extensions (compiled at install time)."""
