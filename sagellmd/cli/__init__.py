"""The `sagellm` command line: a thin HTTP client of the sagellmd API.

It never imports what the daemon runs (reconcile/, api/, store/, runtime/, engines/;
tests/unit/test_imports.py holds it to that) and never edits the desired state but through
the API. A few commands read this machine's files themselves, because they are about the
files of the user at the shell and must work while the daemon is stopped (right after
install, or when it is down); none of them starts an engine or changes the desired state:

* `model list`, daemon unreachable: scans the hub cache and `models.paths` itself
  (`config`, `gpu.estimate`, `models.catalog`); only which engines use a model is unknown.
* `model download` without `--daemon`: downloads in this process into the shell's own
  Hugging Face cache, with the user's token and a progress bar (`models.download`,
  `models.describe`, `models.resolve`); `--daemon` follows the daemon's job
  (`models.jobs` reads its events).
* `model delete --force`, daemon unreachable: plans the deletion itself (`models.delete`).
* `engine start` without `--kind` on a local path: reads the model's files to pick
  `llm` or `embedding` (`models.describe`, `models.resolve`).
* `engine start`, `preset ... --file`: validate the spec or preset file here first
  (`spec`, `presets`), so a typo fails with the field named and exit code 2 before any
  request; the daemon validates it again.
* `preset list`, `preset show`, `preset validate` and shell completion: read the preset
  catalogue and files from disk (`presets`); `preset list` asks the daemon only which is active.
* Every command: `config.default_home` locates SAGELLM_HOME and the API token in it.
"""
