"""The OpenAI-compatible request path: its own process, routing by the daemon's route table."""
