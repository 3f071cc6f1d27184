"""aigrid: a metered token grid and an operating system for agents."""

__version__ = "0.1.0"
