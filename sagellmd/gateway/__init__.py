"""The OpenAI-compatible gateway: its own process in front of the engines (issue 13)."""
