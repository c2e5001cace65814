"""Operational entry points: the `keyledger` command and benchmark scripts."""
