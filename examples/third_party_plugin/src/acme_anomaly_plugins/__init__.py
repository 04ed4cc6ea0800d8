"""Example third-party plugins for anomaly-clustering."""

__version__ = "0.1.0"
