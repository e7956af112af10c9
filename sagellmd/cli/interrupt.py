"""Ctrl-C for the CLI's long-running commands, whatever SIGINT disposition they inherited.

Python installs its KeyboardInterrupt handler only when SIGINT is not ignored at start; a
background job of a non-interactive shell (`sagellm events -f &` in a script), or a
supervisor that ignores SIGINT, passes it on ignored, and then neither Ctrl-C nor
`kill -INT` would end `status --watch` or `events -f`. These commands take SIGINT back.
"""

from __future__ import annotations

import signal
import threading


def take_sigint() -> None:
    """Make SIGINT raise KeyboardInterrupt in this process, as in an interactive shell."""
    # signal.signal works only in the main thread; elsewhere (an embedding program, a
    # test runner's thread) the caller owns the signals.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
