"""Persistent state in SQLite: desired engines, generations, instances and events."""
