"""Multi-node (issue 17, docs/multi-node.md). Imported only with `cluster:` in the config;
the modules that are not Ray adapters never import ray."""
