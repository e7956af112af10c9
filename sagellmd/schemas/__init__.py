"""The JSON Schemas of every document the daemon reads or writes: the one source that spec
validation, the API's body checks and the generated OpenAPI document all take them from."""
