"""sagellmd under a real systemd: start, restart and stop keep the engines (live restore).

systemd runs as PID 1 of a private PID + mount namespace, following
../shared/SYSTEMD-TESTING.md: the dangerous units are masked, /run is a tmpfs, the
tmpfiles.d folders are empty, only a target of our own is started, and the namespace's
PID 1 is SIGKILLed at the end. A systemd that reached sysinit.target would empty the whole
machine's /tmp, so on top of the recipe this test keeps systemd further away from the host:

* sagellmd.service gets DefaultDependencies=no, so neither sysinit.target nor basic.target
  (tmpfiles, sysusers, binfmt, utmp, journal flush, timers) is ever pulled in;
* PID 1 runs with $container set, in its own UTS namespace and cgroup subtree, with a
  private /dev, /sys/fs/cgroup and /var/log/journal and a read-only /proc/sys, the way
  systemd's CONTAINER_INTERFACE asks of a container manager: otherwise it writes device
  symlinks, cgroup folders and sysctls of the host, which the namespace shares.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import pytest
import yaml

from sagellmd import __version__
from tests.integration.conftest import FAKE_VLLM, ROOT, engine_processes, fake_preset, free_port

SYSTEMD = Path("/lib/systemd/systemd")
UNIT = ROOT / "systemd" / "sagellmd.service"
SAGELLMD = Path(sys.executable).with_name("sagellmd")
CGROUP_ROOT = Path("/sys/fs/cgroup")
# The hierarchies systemd tracks its units in (cgroup v1 with a unified one beside it).
TRACKING_HIERARCHIES = ("systemd", "unified")
# SYSTEMD-TESTING.md's list: what must never run in the namespace.
MASKED = (
    "systemd-tmpfiles-setup.service",
    "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-setup-dev-early.service",
    "systemd-tmpfiles-clean.timer",
    "systemd-udev-trigger.service",
    "systemd-udevd.service",
    "systemd-udevd-control.socket",
    "systemd-udevd-kernel.socket",
    "getty.target",
    "serial-getty@ttyS0.service",
    "console-getty.service",
    "rescue.service",
    "emergency.service",
    "systemd-remount-fs.service",
    "systemd-sysctl.service",
    "systemd-modules-load.service",
)
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
BOOT_TIMEOUT_S = 30.0
# Set (to anything but 0) to skip this test on a machine where it may run (root, systemd).
SKIP_SWITCH = "SAGELLM_SKIP_SYSTEMD_TESTS"
T = TypeVar("T")


def missing_prerequisite() -> str | None:
    """Why a real systemd cannot be started here, or None."""
    if os.environ.get(SKIP_SWITCH, "").strip() not in ("", "0"):
        return f"{SKIP_SWITCH} is set"
    if os.geteuid() != 0:
        return "not root: systemd as PID 1 of a namespace needs root"
    if not SYSTEMD.exists():
        return f"no {SYSTEMD}"
    for tool in ("unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return f"no {tool} binary"
    for hierarchy in TRACKING_HIERARCHIES:
        if not (CGROUP_ROOT / hierarchy / "cgroup.procs").exists():
            return f"no cgroup hierarchy at {CGROUP_ROOT / hierarchy}"
    if not SAGELLMD.exists():
        return f"no {SAGELLMD} (install the package into this venv)"
    return None


DROP_IN = """\
# Test drop-in: this checkout's sagellmd, as root, on a temp home inside the test namespace.
[Unit]
# No sysinit.target/basic.target: they pull in host setup services (tmpfiles, sysusers,
# binfmt, utmp, journal flush) that must never run against the shared file system. The
# journal is then wanted explicitly, for `journalctl -u sagellmd`.
DefaultDependencies=no
Wants=systemd-journald.socket
After=systemd-journald.socket

[Service]
# A test machine has no sagellm user (nor its groups): run as root.
User=
Group=
SupplementaryGroups=
ExecStart=
ExecStart={sagellmd}
# StateDirectory= would create /var/lib/sagellm on the shared disk; the home is a temp dir.
StateDirectory=
Environment=SAGELLM_HOME={home}
Environment=HF_HOME={home}/huggingface
# ProtectSystem=strict makes /tmp read-only, and the temp home lives there. All the other
# hardening options of the unit work in the namespace and are kept.
ReadWritePaths={home}
"""

TARGET = "[Unit]\nDescription=test\nDefaultDependencies=no\nWants=sagellmd.service\n"


def namespace_script(base: Path, cgroup: str) -> str:
    """The shell that prepares the namespace, then execs systemd as its PID 1."""
    units, empty, journal = base / "units", base / "empty", base / "journal"
    dev, cgroups = base / "dev", base / "cgroup"
    q = shlex.quote
    steps = [
        f"echo 0 > {q(str(CGROUP_ROOT / h / cgroup / 'cgroup.procs'))}"
        for h in TRACKING_HIERARCHIES
    ]
    steps += [
        # The recipe.
        "mount -t tmpfs tmpfs /run",
        f"mount --bind {q(str(empty))} /usr/lib/tmpfiles.d",
        f"mount --bind {q(str(empty))} /etc/tmpfiles.d",
        f"mount --bind {q(str(units))} /etc/systemd/system",
        # Journal files stay in the temp dir, not in the host's /var/log/journal.
        f"{{ [ ! -d /var/log/journal ] || mount --bind {q(str(journal))} /var/log/journal; }}",
        # A private /dev: journald's /dev/log symlink and PID 1's console output stay in it.
        f"mount -t tmpfs -o mode=755 tmpfs {q(str(dev))}",
        *(f"touch {q(str(dev / n))} && mount --bind /dev/{n} {q(str(dev / n))}" for n in DEV_NODES),
        f"touch {q(str(dev / 'console'))} && mount --bind /dev/null {q(str(dev / 'console'))}",
        f"mkdir {q(str(dev / 'pts'))} {q(str(dev / 'shm'))}",
        f"mount --bind /dev/pts {q(str(dev / 'pts'))}",
        f"ln -s pts/ptmx {q(str(dev / 'ptmx'))}",
        f"mount -t tmpfs -o mode=1777 tmpfs {q(str(dev / 'shm'))}",
        f"mount --move {q(str(dev))} /dev",
        # A private /sys/fs/cgroup holding the same hierarchies: systemd creates folders
        # and symlinks for the controllers it mounts, and remounts the tmpfs read-only.
        f"mount -t tmpfs -o mode=755 tmpfs {q(str(cgroups))}",
        f"for h in /sys/fs/cgroup/*; do n=$(basename $h); "
        f"if [ -L $h ]; then cp -P $h {q(str(cgroups))}/$n; "
        f"else mkdir {q(str(cgroups))}/$n && mount --bind $h {q(str(cgroups))}/$n; fi; done",
        f"mount --move {q(str(cgroups))} /sys/fs/cgroup",
        # Sysctls are global: PID 1 must not bump them for the whole machine.
        "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys",
        f"exec {SYSTEMD} --system --unit=t.target",
    ]
    return " && ".join(steps)


@dataclass
class Namespace:
    """A systemd running as PID 1 of a private namespace, and the sagellm home it serves."""

    base: Path
    home: Path
    api_port: int
    pid1: int  # as seen from outside

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-m", "-p", "-u", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{args} exited {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result

    def systemctl(self, *args: str, check: bool = True) -> str:
        return self.run("systemctl", *args, check=check).stdout.strip()

    def journal(self) -> str:
        return self.run("journalctl", "-u", "sagellmd", "--no-pager").stdout

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def token(self) -> str:
        return (self.home / "token").read_text().strip()


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float,
    what: str,
    diagnostics: Callable[[], str] = lambda: "",
) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{diagnostics()}")


def remove_cgroup_subtree(name: str) -> None:
    """Delete the namespace's cgroup folders, deepest first, in every hierarchy."""
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / name
        if not top.is_dir():
            continue
        folders = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for folder in [*folders, top]:
            for _ in range(50):  # a cgroup whose last process is still exiting is busy
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


@pytest.fixture
def namespace(tmp_path: Path) -> Iterator[Namespace]:
    reason = missing_prerequisite()
    if reason:
        pytest.skip(reason)
    base = tmp_path / "systemd"
    home = tmp_path / "home"
    for folder in ("units/sagellmd.service.d", "empty", "journal", "dev", "cgroup"):
        (base / folder).mkdir(parents=True)
    home.mkdir()
    api_port = free_port()
    port_start = 21000 + (os.getpid() % 400) * 100
    (home / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "api": {"host": "127.0.0.1", "port": api_port},
                "gpus": "simulate:1x80",
                "ports": {"start": port_start, "end": port_start + 99},
                "runtimes": {"vllm": {"command": [sys.executable, str(FAKE_VLLM)]}},
                # The stand-in's fake/* models are on no disk and there is no hub here.
                "models": {"hub_check": False},
                # The gateway the daemon supervises rides along: it too must survive a restart.
                "gateway": {"enabled": True, "port": free_port()},
            }
        )
    )
    units = base / "units"
    (units / "t.target").write_text(TARGET)
    shutil.copy(UNIT, units / "sagellmd.service")
    (units / "sagellmd.service.d" / "test.conf").write_text(
        DROP_IN.format(sagellmd=SAGELLMD, home=home)
    )
    for unit in MASKED:
        (units / unit).symlink_to("/dev/null")
    cgroup = f"sagellm-e2e-{uuid.uuid4().hex[:12]}"
    for hierarchy in TRACKING_HIERARCHIES:
        (CGROUP_ROOT / hierarchy / cgroup).mkdir()
    log = (base / "log").open("wb")
    unshare = subprocess.Popen(
        [
            "unshare",
            "--fork",
            "--pid",
            "--mount",
            "--mount-proc",
            "--uts",
            "--propagation",
            "private",
            "sh",
            "-c",
            namespace_script(base, cgroup),
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "container": "sagellm-test",
        },
    )
    pid1: int | None = None
    try:
        pid1 = wait_for_pid1(unshare, base)
        ns = Namespace(base, home, api_port, pid1)
        wait_for(
            lambda: ns.systemctl("is-active", "t.target", check=False) == "active",
            BOOT_TIMEOUT_S,
            "t.target",
            lambda: (base / "log").read_text(errors="replace"),
        )
        yield ns
    finally:
        # Kills every process of the namespace: systemd, the daemon and its engines.
        if pid1 is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid1, signal.SIGKILL)
        try:
            unshare.wait(15)
        except subprocess.TimeoutExpired:
            unshare.kill()
            unshare.wait(5)
        log.close()
        try:
            wait_for(lambda: not engine_processes(home), 10, "the namespace's engines to die")
        finally:
            remove_cgroup_subtree(cgroup)


def wait_for_pid1(unshare: subprocess.Popen[bytes], base: Path) -> int:
    """The host pid of the namespace's PID 1 once it is systemd; skip if it never gets there."""
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while time.monotonic() < deadline:
        if unshare.poll() is not None:
            log = (base / "log").read_text(errors="replace")
            pytest.skip(
                f"could not start systemd in a namespace (exit {unshare.returncode}): {log}"
            )
        try:
            for child in psutil.Process(unshare.pid).children():
                if child.cmdline()[:1] == [str(SYSTEMD)]:
                    return child.pid
        except psutil.Error:
            pass
        time.sleep(0.05)
    pytest.skip(f"systemd did not start in {BOOT_TIMEOUT_S}s: {(base / 'log').read_text()}")


def engine_leaders(home: Path) -> list[psutil.Process]:
    """The user's engines' process group leaders (the daemon's gateway is not one of them)."""
    return [
        p
        for p in engine_processes(home)
        if os.getpgid(p.pid) == p.pid and p.environ().get("SAGELLM_ENGINE_ID") != "gateway"
    ]


def test_start_restart_and_stop_under_systemd_keep_the_engine(namespace: Namespace):
    ns = namespace
    ns.systemctl("start", "sagellmd")
    assert ns.systemctl("is-active", "sagellmd", check=False) == "active"
    client = httpx.Client(base_url=ns.url, timeout=30)
    headers = {"Authorization": f"Bearer {ns.token()}"}

    preset = fake_preset("e2e", {"name": "chat"})
    response = client.put("/v1/presets/e2e", json=preset, headers=headers)
    assert response.status_code == 200, response.text

    def ready() -> dict[str, Any] | None:
        answer = client.get("/v1/engines/e2e.chat")
        entry = answer.json()
        assert "state" in entry, answer.text
        return entry if entry["state"] == "ready" else None

    first = wait_for(ready, 20, "e2e.chat ready", ns.journal)
    (leader,) = engine_leaders(ns.home)
    gateway = wait_for(
        lambda: (g := client.get("/v1/gateway").json())["state"] == "ready" and g,
        20,
        "the gateway ready",
        ns.journal,
    )
    assert httpx.get(f"http://127.0.0.1:{first['port']}/health").status_code == 200

    ns.systemctl("restart", "sagellmd")
    assert ns.systemctl("is-active", "sagellmd", check=False) == "active"
    second = wait_for(ready, 20, "e2e.chat ready after the restart", ns.journal)
    assert second["pid"] == first["pid"] and second["restarts"] == 0
    assert [p.pid for p in engine_leaders(ns.home)] == [leader.pid]
    assert client.get("/v1/gateway").json()["pid"] == gateway["pid"]
    events = client.get("/v1/events", params={"engine": "e2e.chat"}).json()["events"]
    assert any(e["type"] == "adopted" for e in events)

    journal = ns.journal()
    assert f"sagellmd {__version__} pid=" in journal
    assert "event=adopted" in journal

    ns.systemctl("stop", "sagellmd")
    assert ns.systemctl("is-active", "sagellmd", check=False) == "inactive"
    with pytest.raises(httpx.TransportError):
        client.get("/healthz")
    # Live restore: KillMode=process left the engine running and serving.
    assert leader.is_running() and leader.status() != psutil.STATUS_ZOMBIE
    assert httpx.get(f"http://127.0.0.1:{first['port']}/health").status_code == 200
    client.close()
