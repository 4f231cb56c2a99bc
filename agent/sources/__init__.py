"""Where samples come from: one source per module, all behind the :class:`Source` protocol."""

from agent.sources.base import Polled, Source, SourceStartupError

__all__ = ["Polled", "Source", "SourceStartupError"]
