"""Models on this machine: the Hugging Face cache, `models.paths` directories and packages."""
