"""`sagellmd`: lock the home, migrate, recover engines, then run the loop and the API."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, NoReturn

import uvicorn

from sagellmd import __version__
from sagellmd.api.app import create_app
from sagellmd.api.auth import TokenFile
from sagellmd.api.connections import ConnectionGuard, raise_open_files_limit
from sagellmd.api.context import ApiContext
from sagellmd.api.ui_signed_out import sessions_in_home
from sagellmd.config import Settings, default_home, load_settings
from sagellmd.errors import AlreadyRunningError, ConfigError, SagellmError
from sagellmd.events import EventHub
from sagellmd.notify import Notifier
from sagellmd.preflight import already_running, check_home, check_presets
from sagellmd.presets import find_preset
from sagellmd.reconcile.loop import Reconciler
from sagellmd.runtime.kinds import startup_timeout_for
from sagellmd.store.db import prepare_database
from sagellmd.store.repository import Store

log = logging.getLogger("sagellmd")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def acquire_lock(path: Path) -> IO[str]:
    """Hold an exclusive lock on the home for the daemon's lifetime."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600), "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise AlreadyRunningError(
            f"another sagellmd (pid {holder}) is already running on {path.parent};"
            " stop it first or use another --home"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def bind_api_socket(settings: Settings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.api_host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are
    # TCP, and without it every answer waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.api_host, settings.api_port))
    except OSError as exc:
        sock.close()
        # The same home's daemon on the same port is better said as what it is.
        raise already_running(settings) or ConfigError(
            f"cannot listen on {settings.api_host}:{settings.api_port}: {exc.strerror};"
            " choose another with --port or api.port in config.yaml"
        ) from None
    sock.listen(128)
    sock.set_inheritable(False)
    return sock


def declare_presets(store: Store, settings: Settings, names: list[str]) -> None:
    """`--preset NAME`: the same as `sagellm preset set NAME` once the daemon is up."""
    active = {preset.name: preset.document for preset in store.active_presets()}
    for name in names:
        entry = find_preset(name, settings.home, startup_timeout_for)
        if active.get(name) == entry.preset.to_dict():
            continue
        store.set_preset(entry.preset, entry.source, f"sagellmd --preset {name}")


async def serve(settings: Settings, presets: list[str]) -> int:
    # Every input is checked before anything is created: a typo in --preset or a port in
    # use must not leave a home and an empty database behind.
    check_presets(settings, presets)
    if settings.cluster is not None:
        # Ray missing is a configuration error, said before anything is created.
        from sagellmd.cluster.ray_backend import import_ray

        import_ray()
    sock = bind_api_socket(settings)
    check_home(settings)
    # 0700: the database and the logs hold engine env values (tokens) in clear text.
    settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings.logs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = acquire_lock(settings.lock_path)
    token = TokenFile(settings.token_path)
    # Refuses a corrupt or newer database untouched; backs it up before a migration.
    database = prepare_database(settings.db_path)
    store = Store(database)
    declare_presets(store, settings, presets)
    hub = EventHub()
    reconciler = Reconciler(settings, store, hub)
    reconciler.recover()
    notifier = Notifier()
    if notifier.watchdog_interval_s:
        reconciler.set_heartbeat(notifier.watchdog, notifier.watchdog_interval_s / 2)
    ctx = ApiContext(
        settings, store, hub, reconciler, token, time.time(), ui=sessions_in_home(settings.home)
    )
    # Demand and idleness come from the gateway's reports, which the API receives.
    reconciler.world.activity = ctx.gateway_activity.fresh
    guard = ConnectionGuard.for_descriptors(settings.api_header_timeout_s, raise_open_files_limit())
    config = uvicorn.Config(
        create_app(ctx),
        log_level="warning",
        lifespan="off",
        access_log=False,
        http=guard.protocol_class(),
        timeout_keep_alive=settings.api_keep_alive_s,  # type: ignore[arg-type]
        # Past this many connections a request gets a quick 503, not a descriptor error.
        limit_concurrency=guard.max_connections,
    )
    server = _Server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    store.add_event(
        None,
        "daemon",
        f"sagellmd {__version__} started (pid {os.getpid()})",
        store.current_generation(),
    )
    log.info(
        "sagellmd %s pid=%s home=%s api=%s",
        __version__,
        os.getpid(),
        settings.home,
        settings.api_url,
    )
    api_task = asyncio.create_task(server.serve(sockets=[sock]), name="api")
    while not server.started and not api_task.done():
        await asyncio.sleep(0.01)
    engines = len(reconciler.world.instances)
    notifier.ready(f"serving {settings.api_url}; {engines} engine(s) recovered")
    loop_task = asyncio.create_task(reconciler.run(), name="reconcile")
    stop_task = asyncio.create_task(stop.wait(), name="stop")
    done, _ = await asyncio.wait(
        {loop_task, api_task, stop_task}, return_when=asyncio.FIRST_COMPLETED
    )
    for task in done:
        if task is not stop_task and task.exception() is not None:
            log.error("%s crashed", task.get_name(), exc_info=task.exception())
    log.info(
        "sagellmd stopping (engines %s)",
        "stopped" if settings.stop_engines_on_exit else "left running",
    )
    notifier.stopping()
    hub.close()  # long-polls answer now (empty) instead of being cancelled mid-request
    server.should_exit = True
    await reconciler.shutdown(settings.stop_engines_on_exit)
    store.add_event(
        None, "daemon", f"sagellmd stopped (pid {os.getpid()})", store.current_generation()
    )
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(api_task, timeout=2.0)
    loop_task.cancel()
    database.dispose()
    lock.close()
    return 0


class _Parser(argparse.ArgumentParser):
    """Bad flags are one line on stderr and exit code 2, like every other start-up error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"sagellmd: error: {message} (see sagellmd --help)\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(
        prog="sagellmd",
        description="Keep the declared LLM and embedding engines running.",
    )
    # The real fallback chain, and where it leads here (argparse %-formats help texts).
    now = str(default_home()).replace("%", "%%")
    parser.add_argument(
        "--home",
        type=Path,
        metavar="DIR",
        help="state directory (default: $SAGELLM_HOME, else systemd's $STATE_DIRECTORY,"
        f" else ~/.local/share/sagellm; now {now})",
    )
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="config file (default: DIR/config.yaml)"
    )
    parser.add_argument("--host", help="API bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="API port (default 8765)")
    parser.add_argument(
        "--preset",
        action="append",
        default=[],
        metavar="NAME",
        help="declare this preset at start, like `sagellm preset set NAME`",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("SAGELLM_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )
    parser.add_argument("--version", action="version", version=f"sagellmd {__version__}")
    return parser.parse_args(argv)


# Libraries that log routine work at INFO: APScheduler two lines per timer, alembic its
# migration context at every start. Their warnings still show.
QUIET_LIBRARIES = ("apscheduler", "alembic", "httpx", "httpcore", "huggingface_hub", "uvicorn")


def configure_logging(level: str) -> None:
    """Our loggers at `level`; third-party ones at WARNING unless `level` is debug."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if level.lower() != "debug":
        for name in QUIET_LIBRARIES:
            logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configure_logging(args.log_level)
    try:
        settings = load_settings(
            home=args.home, config_file=args.config, host=args.host, port=args.port
        )
        code = asyncio.run(serve(settings, args.preset))
    except SagellmError as exc:
        print(f"sagellmd: error: {exc.message}", file=sys.stderr)
        sys.exit(exc.exit_code)
    sys.exit(code)


if __name__ == "__main__":
    main()
