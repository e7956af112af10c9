"""The `sagellm` command line: a thin HTTP client of the sagellmd API."""
