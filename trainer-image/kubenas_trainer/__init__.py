"""kubenas_trainer: builds and trains one child network from an architecture JSON document."""

__version__ = "0.1.0"
