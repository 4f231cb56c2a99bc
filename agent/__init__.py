"""The aiops agent daemon: config, sources, engine, sinks, health and metrics HTTP, CLI."""
