"""The management API (Starlette): reads and edits the desired state, never spawns."""
