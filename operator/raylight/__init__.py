"""Raylight: open-weight LLMs and retrieval agents on your own infrastructure."""

__version__ = "0.1.0"
