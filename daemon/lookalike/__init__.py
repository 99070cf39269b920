"""lookalike: a self-hosted reverse image search and duplicate finder."""

__version__ = "0.1.0"
