"""Fusion families, the isolated worker processes that exercise them, and their verdicts."""
