"""Remediations: the only code that changes workloads."""
