"""Subcommands of the ``aiops`` CLI beyond run/config/demo, one module per command family.

Each module defines ``register(subparsers)``; :data:`agent.cli.COMMAND_MODULES` lists them.
"""
