"""The gateway's cost: direct to an engine vs through sagellm's gateway (and nginx, LiteLLM).

Run from the checkout's root (the daemon and its gateway are this checkout's code):
    PYTHONPATH=$PWD .venv/bin/python bench/gateway.py [--seconds 4] [--nginx] [--litellm]
    PYTHONPATH=$PWD .venv/bin/python bench/gateway.py --quick        # a smoke run, ~30 s

Two stand-in engines (bench/fast_engine.py: raw ASGI on uvicorn + uvloop + httptools, one
worker): `bench-fast` answers at once; `bench-real` waits 20 ms before its answer and
streams 64 tokens 20 ms apart (both stream 64 tokens). With the gateway, a real sagellmd in
a temp home runs them as the custom runtime `fast` and runs its gateway (`gateway: {enabled:
true, port: N}`); without one in this checkout (or with `--gateway off`) the engines run
directly and only the comparisons are measured. For each engine, non-streaming and
streaming chat completions, and each concurrency (1, 16, 64, 256), every target is measured
in turn (interleaved, so a change of machine load hits them all): `direct` (the engine's own
port), `gateway`, and with `--nginx` nginx as a plain reverse proxy (one worker, upstream
keep-alive, no buffering), with `--litellm` LiteLLM's proxy (one process, from the throwaway
venv /tmp/litellm-venv; see gateway_procs.py).

Per point: `wrk` for `--seconds` gives req/s and p50/p99 latency (to the end of the answer);
then the asyncio probe of gateway_load.py at the same concurrency for `--ttfb-seconds`
gives p50/p99 time to the first body byte (its own rate is in the `probe/s` column: where it
is far below wrk's, the probe was the limit and its TTFB is at that lower load). CPU is the
proxy's (gateway, nginx master + worker, LiteLLM) and the engine's, in % of one core over
the wrk run. Everything shares this machine's CPUs (printed at the top) with wrk and the
probe, so figures are for this machine; ratios between targets of one run are what to read.
The default run takes about 3.5 minutes, 7 with --nginx --litellm.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway_load import WrkResult, lua_script, run_wrk, ttfb  # noqa: E402
from gateway_procs import (  # noqa: E402
    HOST,
    Proc,
    Profile,
    cpu_seconds,
    gateway_available,
    start_daemon_with_gateway,
    start_engines,
    start_litellm,
    start_nginx,
)
from gateway_standalone import start_standalone_gateway  # noqa: E402

PROFILES = (
    Profile("bench-fast", latency_ms=0, stream_tokens=64, token_interval_ms=0),
    Profile("bench-real", latency_ms=20, stream_tokens=64, token_interval_ms=20),
)
CONCURRENCY = (1, 16, 64, 256)
PATH = "/v1/chat/completions"


@dataclass
class Target:
    name: str
    urls: dict[str, str]  # base URL by profile name
    pids: list[int]  # the proxy's processes; empty for direct
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Row:
    profile: str
    stream: bool
    concurrency: int
    target: str
    wrk: WrkResult
    ttfb_p50: float
    ttfb_p99: float
    ttfb_n: int
    probe_rate: float
    probe_errors: int
    proxy_cpu: float | None
    engine_cpu: float

    def line(self, direct: Row | None) -> str:
        ratio = (
            f"{self.wrk.rate / direct.wrk.rate:5.2f}x" if direct and direct.wrk.rate else "    -"
        )
        cpu = "     -" if self.proxy_cpu is None else f"{self.proxy_cpu:5.0f}%"
        mode = "stream" if self.stream else "plain"
        return (
            f"{self.profile:10s} {mode:6s} {self.concurrency:4d} {self.target:8s}"
            f" {self.wrk.rate:9.1f} {ratio} {self.wrk.p50_ms:8.2f} {self.wrk.p99_ms:8.2f}"
            f" {self.ttfb_p50:8.2f} {self.ttfb_p99:8.2f} {self.ttfb_n:6d} {self.probe_rate:8.1f}"
            f" {cpu} {self.engine_cpu:5.0f}% {self.wrk.errors + self.probe_errors:5d}"
        )


HEADER = (
    f"{'engine':10s} {'mode':6s} {'c':>4s} {'target':8s} {'req/s':>9s} {'/direct':>6s}"
    f" {'p50 ms':>8s} {'p99 ms':>8s} {'ttfb p50':>8s} {'ttfb p99':>8s} {'ttfb n':>6s}"
    f" {'probe/s':>8s} {'proxy':>6s} {'engine':>6s} {'errs':>5s}"
)


def body(model: str, stream: bool) -> bytes:
    stream_field = "true" if stream else "false"
    return (
        f'{{"model":"{model}","messages":[{{"role":"user","content":"Say hello"}}],'
        f'"max_tokens":64,"stream":{stream_field}}}'
    ).encode()


def measure(
    work: Path,
    target: Target,
    profile: Profile,
    stream: bool,
    concurrency: int,
    engine_pid: int,
    args: argparse.Namespace,
) -> Row:
    base = target.urls[profile.name]
    payload = body(profile.name, stream)
    script_path = work / f"{target.name}-{profile.name}-{stream}.lua"
    script = lua_script(script_path, payload, target.headers)
    cpu_before = cpu_seconds(target.pids)
    engine_before = cpu_seconds([engine_pid])
    began = time.perf_counter()
    result = run_wrk(base + PATH, script, concurrency, args.seconds)
    wall = time.perf_counter() - began
    proxy_cpu = (cpu_seconds(target.pids) - cpu_before) / wall * 100 if target.pids else None
    engine_cpu = (cpu_seconds([engine_pid]) - engine_before) / wall * 100
    port = int(base.rsplit(":", 1)[1])
    samples = ttfb(HOST, port, PATH, payload, target.headers, concurrency, args.ttfb_seconds)
    return Row(
        profile.name, stream, concurrency, target.name, result,
        samples.percentile_ms(0.5), samples.percentile_ms(0.99), len(samples.ttfb_s),
        samples.rate, samples.errors, proxy_cpu, engine_cpu,
    )  # fmt: skip


def summary(rows: list[Row]) -> list[str]:
    """The issue's targets, read off the rows: ratios and added latency against direct."""
    lines: list[str] = []
    index = {(r.profile, r.stream, r.concurrency, r.target): r for r in rows}
    for (profile, stream, c, target), row in index.items():
        if target == "direct":
            continue
        direct = index.get((profile, stream, c, "direct"))
        if direct is None or not direct.wrk.rate:
            continue
        mode = "stream" if stream else "plain"
        added_p50 = row.wrk.p50_ms - direct.wrk.p50_ms
        added_ttfb = row.ttfb_p50 - direct.ttfb_p50
        line = (
            f"{target:8s} {profile} {mode:6s} c={c:<3d}: {row.wrk.rate / direct.wrk.rate:5.2f}x"
            f" direct, p50 {added_p50:+.2f} ms, ttfb p50 {added_ttfb:+.2f} ms"
        )
        litellm = index.get((profile, stream, c, "litellm"))
        if target == "gateway" and litellm is not None and litellm.wrk.rate:
            line += f", {row.wrk.rate / litellm.wrk.rate:.1f}x LiteLLM"
        lines.append(line)
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="wrk run per point")
    parser.add_argument("--ttfb-seconds", type=float, default=2.0, help="TTFB probe per point")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY))
    parser.add_argument("--engine", choices=[p.name for p in PROFILES], nargs="+")
    parser.add_argument("--mode", choices=["plain", "stream"], nargs="+")
    parser.add_argument("--nginx", action="store_true", help="also through nginx")
    parser.add_argument("--litellm", action="store_true", help="also through LiteLLM's proxy")
    parser.add_argument(
        "--gateway", choices=["auto", "daemon", "standalone", "off"], default="auto",
        help="daemon: run by sagellmd; standalone: run by the bench with a fixed route table;"
        " auto: daemon if it can, else standalone, else none (no gateway in this checkout)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="smoke run: c=1,16, 2 s a point")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, configs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.ttfb_seconds, args.concurrency = 2.0, 1.5, [1, 16]
    if args.seconds < 1 or args.ttfb_seconds <= 0 or min(args.concurrency) < 1:
        parser.error("--seconds must be >= 1 (wrk counts whole seconds), the rest > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profiles = [p for p in PROFILES if not args.engine or p.name in args.engine]
    modes = [m == "stream" for m in (args.mode or ["plain", "stream"])]
    work = Path(tempfile.mkdtemp(prefix="sagellm-bench-gw-"))
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; work {work}")
    procs: list[Proc] = []
    try:
        targets, engine_pids = start_targets(work, profiles, args, procs)
        print(HEADER)
        rows: list[Row] = []
        for profile in profiles:
            for stream in modes:
                for concurrency in args.concurrency:
                    direct: Row | None = None
                    for target in targets:
                        row = measure(
                            work, target, profile, stream, concurrency,
                            engine_pids[profile.name], args,
                        )  # fmt: skip
                        direct = row if target.name == "direct" else direct
                        rows.append(row)
                        print(row.line(direct), flush=True)
        print("\nagainst direct, same run:")
        for line in summary(rows):
            print("  " + line)
        bad = [r for r in rows if r.wrk.errors or r.probe_errors or math.isnan(r.wrk.p50_ms)]
        if bad:
            print(f"{len(bad)} points had errors (see the errs column); logs in {work}")
            args.keep = True
        return 1 if bad else 0
    finally:
        for proc in reversed(procs):
            proc.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def start_targets(
    work: Path, profiles: list[Profile], args: argparse.Namespace, procs: list[Proc]
) -> tuple[list[Target], dict[str, int]]:
    """Start what is measured, appending to `procs` as it goes (so a failure stops them)."""
    unavailable = gateway_available() if args.gateway != "off" else "--gateway off"
    if unavailable and args.gateway in ("daemon", "standalone"):
        raise SystemExit(f"--gateway {args.gateway}, but {unavailable}")
    gateway: Target | None = None
    direct_urls: dict[str, str] = {}
    if unavailable is None and args.gateway in ("auto", "daemon"):
        try:
            daemon, direct_urls, gateway_urls, pid = start_daemon_with_gateway(work, profiles)
        except (RuntimeError, AssertionError, KeyError) as exc:
            if args.gateway == "daemon":
                raise
            reason = str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else repr(exc)
            print(f"gateway: the daemon does not run one here ({reason}); running it standalone")
        else:
            procs.append(daemon)
            gateway = Target("gateway", gateway_urls, [pid])
            engine_pids = {name: engine_pid_of(url) for name, url in direct_urls.items()}
            print(f"gateway: run by sagellmd, pid {pid} at {gateway_urls[profiles[0].name]}")
    if gateway is None:
        engines, direct_urls = start_engines(work, profiles)
        procs.extend(engines)
        engine_pids = {p.name: proc.pids[0] for p, proc in zip(profiles, engines, strict=True)}
        if unavailable is None:
            proc, gateway_urls = start_standalone_gateway(work, profiles, direct_urls)
            procs.append(proc)
            gateway = Target("gateway", gateway_urls, proc.pids)
            print(
                f"gateway: pid {proc.pids[0]} at {gateway_urls[profiles[0].name]}, run by the"
                " bench with a fixed route table (gateway_standalone.py)"
            )
        else:
            print(f"gateway: not measured ({unavailable})")
    targets = [Target("direct", direct_urls, [])]
    if gateway is not None:
        targets.append(gateway)
    if args.nginx:
        nginx, urls, version = start_nginx(work, direct_urls)
        procs.append(nginx)
        targets.append(Target("nginx", urls, nginx.pids))
        print(f"nginx: {version}, 1 worker, upstream keepalive 512, proxy_buffering off")
    if args.litellm:
        litellm, urls, version, key = start_litellm(work, direct_urls)
        procs.append(litellm)
        targets.append(Target("litellm", urls, litellm.pids, {"Authorization": f"Bearer {key}"}))
        print(f"litellm: {version}, 1 process")
    return targets, engine_pids


def engine_pid_of(url: str) -> int:
    """The pid listening on the URL's port (the daemon-run engine)."""
    import psutil

    port = int(url.rsplit(":", 1)[1])
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return int(conn.pid)
    raise RuntimeError(f"nothing listens on {url}")


if __name__ == "__main__":
    sys.exit(main())
