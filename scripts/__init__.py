"""Operational entry points: the `keyledger` command and benchmark scripts (may import every package)."""
