"""The processes bench/gateway.py measures: stand-in engines, sagellmd + gateway, nginx, LiteLLM.

Each starter returns a `Proc` (what to stop, which pids to charge CPU to) and its base URLs
per engine profile; everything runs on loopback on free ports from a temp directory.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
FAST_ENGINE = ROOT / "bench" / "fast_engine.py"
LITELLM_VENV = Path("/tmp/litellm-venv")
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Profile:
    name: str  # also the engine id and the model name asked for
    latency_ms: float
    stream_tokens: int
    token_interval_ms: float

    def flags(self) -> list[str]:
        return [
            "--latency-ms", str(self.latency_ms),
            "--stream-tokens", str(self.stream_tokens),
            "--token-interval-ms", str(self.token_interval_ms),
        ]  # fmt: skip


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes] | None
    pids: list[int] = field(default_factory=list)  # whose CPU counts (children included)
    stop_hook: Any = None

    def stop(self) -> None:
        if self.stop_hook is not None:
            self.stop_hook()
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the processes and all their children, so far."""
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                times = process.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: exited {proc.returncode}: {tail(log)}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not up within {timeout} s: {tail(log)}")


def tail(log: Path, lines: int = 15) -> str:
    if not log.exists():
        return "(no log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )


def start_engines(work: Path, profiles: list[Profile]) -> tuple[list[Proc], dict[str, str]]:
    """One fast_engine per profile, run directly (no daemon): their URLs by profile."""
    procs: list[Proc] = []
    urls: dict[str, str] = {}
    for profile in profiles:
        port = free_port()
        log = work / f"engine-{profile.name}.log"
        argv = [sys.executable, str(FAST_ENGINE), "--port", str(port), *profile.flags()]
        popen = spawn(argv, log)
        procs.append(Proc(f"engine {profile.name}", popen, [popen.pid]))
        urls[profile.name] = f"http://{HOST}:{port}"
        wait_http(urls[profile.name] + "/health", 20, popen, log)
    return procs, urls


def gateway_available() -> str | None:
    """None when this checkout has a gateway process to run, else why not."""
    if importlib.util.find_spec("sagellmd.gateway") is None:
        return "sagellmd.gateway is not in this checkout"
    return None


def start_daemon_with_gateway(
    work: Path, profiles: list[Profile]
) -> tuple[Proc, dict[str, str], dict[str, str], int]:
    """A real sagellmd whose runtime `fast` runs fast_engine and whose gateway is enabled.

    Returns the daemon, the engines' own URLs, the gateway's URL per profile (the same
    origin: the gateway routes by model name) and the gateway's pid.
    """
    sys.path.insert(0, str(ROOT))
    from tests.integration.conftest import Daemon, base_config

    gateway_port = free_port()
    config = base_config(
        runtimes={"fast": {"command": ["python", str(FAST_ENGINE), "--port", "{port}"]}},
        gateway={"enabled": True, "port": gateway_port},
        # The daemon's default probe interval, not the tests' fast one.
        probes={"liveness_interval_s": 5.0, "liveness_failures": 3},
    )
    daemon = Daemon(work / "home", config)
    daemon.extra_env["SAGELLM_LOG_LEVEL"] = "info"
    daemon.start()
    proc = Proc("sagellmd", daemon.process, [], stop_hook=lambda: stop_daemon(daemon))
    try:
        for profile in profiles:
            spec = {
                "kind": "llm",
                "model": f"fake/{profile.name}",
                "runtime": "fast",
                "gpu_memory_gb": 1,
                # Above the bench's highest concurrency: the cap must not be what is measured.
                "max_concurrent_requests": 1024,
                "extra_args": profile.flags(),
            }
            answer = daemon.put(f"/v1/engines/{profile.name}", spec)
            if answer.status_code not in (200, 201):
                raise RuntimeError(f"PUT /v1/engines/{profile.name}: {answer.text}")
        for profile in profiles:
            daemon.wait_state(profile.name, "ready", timeout=60)
        status = daemon.get("/v1/status").json()
        engines = {e["id"]: e for e in status["engines"]}
        direct = {p.name: f"http://{HOST}:{engines[p.name]['port']}" for p in profiles}
        gateway_url = f"http://{HOST}:{gateway_port}"
        wait_http(gateway_url + "/health", 30, daemon.process, daemon.log_path)
        pid = gateway_pid(daemon.home, status)
    except BaseException:
        proc.stop()
        raise
    return proc, direct, {p.name: gateway_url for p in profiles}, pid


def gateway_pid(home: Path, status: dict[str, Any]) -> int:
    reported = (status.get("gateway") or {}).get("pid")
    if reported:
        return int(reported)
    for process in psutil.process_iter(["pid"]):
        try:
            env = process.environ()
        except psutil.Error:
            continue
        if env.get("SAGELLM_HOME") == str(home) and env.get("SAGELLM_ENGINE_ID") == "gateway":
            return int(process.pid)
    raise RuntimeError("no gateway process found (SAGELLM_ENGINE_ID=gateway)")


def stop_daemon(daemon: Any) -> None:
    try:
        daemon.stop(timeout=30)
    finally:
        daemon.cleanup()  # SIGKILLs every process of the home: engines and gateway


NGINX_CONF = """
worker_processes 1;
daemon off;
user root;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {work}/nginx-body;
  proxy_temp_path {work}/nginx-proxy;
  fastcgi_temp_path {work}/nginx-fastcgi;
  uwsgi_temp_path {work}/nginx-uwsgi;
  scgi_temp_path {work}/nginx-scgi;
  keepalive_requests 1000000;
{servers}
}}
"""
NGINX_SERVER = """
  upstream {name} {{ server {upstream}; keepalive 512; keepalive_requests 1000000; }}
  server {{
    listen {HOST}:{port} backlog=4096;
    location / {{
      proxy_pass http://{name};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
"""


def start_nginx(work: Path, upstreams: dict[str, str]) -> tuple[Proc, dict[str, str], str]:
    """nginx as a plain reverse proxy, one worker, upstream keep-alive, one port per profile."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise RuntimeError("nginx is not installed: apt-get install -y nginx-light")
    urls: dict[str, str] = {}
    servers: list[str] = []
    for name, upstream in upstreams.items():
        port = free_port()
        urls[name] = f"http://{HOST}:{port}"
        address = upstream.removeprefix("http://")
        servers.append(NGINX_SERVER.format(name=name, upstream=address, port=port, HOST=HOST))
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(work=work, servers="".join(servers)))
    version = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr.strip()
    log = work / "nginx-error.log"
    popen = spawn([binary, "-p", str(work), "-c", str(conf)], work / "nginx.out")
    proc = Proc("nginx", popen, [popen.pid])
    for url in urls.values():
        try:
            wait_http(url + "/v1/models", 10, popen, log)
        except BaseException:
            proc.stop()
            raise
    return proc, urls, version.removeprefix("nginx version: ")


LITELLM_MODEL = """
  - model_name: {name}
    litellm_params:
      model: openai/{name}
      api_base: {upstream}/v1
      api_key: unused
"""


def start_litellm(work: Path, upstreams: dict[str, str]) -> tuple[Proc, dict[str, str], str, str]:
    """LiteLLM's proxy from its throwaway venv, one process, each profile an openai model.

    It refuses to start without a master key (1.108+), so it gets one and the requests
    carry it, as in any real deployment; its version and the key are returned too.
    """
    binary = LITELLM_VENV / "bin" / "litellm"
    if not binary.exists():
        raise RuntimeError(
            f"no {binary}: python3 -m venv {LITELLM_VENV} && "
            f"{LITELLM_VENV}/bin/pip install 'litellm[proxy]'"
        )
    models = "".join(LITELLM_MODEL.format(name=n, upstream=u) for n, u in upstreams.items())
    conf = work / "litellm.yaml"
    key = f"sk-bench-{os.urandom(16).hex()}"
    conf.write_text(f"model_list:{models}\ngeneral_settings:\n  master_key: {key}\n")
    version = subprocess.run(
        [str(LITELLM_VENV / "bin" / "python"), "-c",
         "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    port = free_port()
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}
    env.pop("DATABASE_URL", None)
    log = work / "litellm.log"
    argv = [str(binary), "--config", str(conf), "--host", HOST, "--port", str(port)]
    popen = spawn([*argv, "--num_workers", "1", "--telemetry", "False"], log, env)
    proc = Proc("litellm", popen, [popen.pid])
    url = f"http://{HOST}:{port}"
    try:
        wait_http(url + "/health/liveliness", 120, popen, log)
    except BaseException:
        proc.stop()
        raise
    return proc, {name: url for name in upstreams}, version, key
