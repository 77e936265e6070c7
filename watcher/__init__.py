"""watcher: alerts sellers when a marketplace or payment platform acts against their account."""

__version__ = "0.1.0"
