"""Simulations: the twin cluster, scenarios and replay (imported only by the CLI and tests)."""
