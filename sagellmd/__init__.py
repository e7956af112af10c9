"""sagellm: a desired-state daemon for LLM and embedding inference engines."""

__version__ = "0.1.0"
