"""Tiny random-weight checkpoints for tests, the demo and bench; production code never imports this."""
