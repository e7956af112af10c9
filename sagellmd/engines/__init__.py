"""Engine servers that ship with sagellm and run as processes the daemon supervises."""
