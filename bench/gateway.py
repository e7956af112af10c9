"""The gateway's cost: direct to an engine vs through sagellm's gateway (and nginx, LiteLLM).

Run from the checkout's root (the daemon and its gateway are this checkout's code):
    PYTHONPATH=$PWD .venv/bin/python bench/gateway.py [--seconds 4] [--nginx] [--litellm]
    PYTHONPATH=$PWD .venv/bin/python bench/gateway.py --quick        # a smoke run, ~1 min

Two stand-in engines (bench/fast_engine.py: raw ASGI on uvicorn + uvloop + httptools, one
worker), both streaming 64 tokens: `bench-fast` answers at once; `bench-real` waits 20 ms
before its answer and streams its tokens 20 ms apart. The gateway is the real process
(`python -m sagellmd.gateway`): with `--gateway daemon` a real sagellmd in a temp home runs
the engines as the custom runtime `fast` and runs the gateway (`gateway: {enabled: true,
port: N}`); with `--gateway standalone` the bench runs the engines and the gateway itself and
serves the gateway a fixed route table (gateway_standalone.py); `auto` (the default) tries
the daemon, then standalone, then measures no gateway when this checkout has none. For each
engine, non-streaming and streaming chat completions, and each concurrency (1, 16, 64,
256), every target is measured in turn (interleaved, so a change of machine load hits them
all): `direct` (the engine's own port), `gateway`, with `--nginx` nginx as a plain reverse
proxy (one worker, upstream keep-alive, no buffering), with `--litellm` LiteLLM's proxy
(one process, from the throwaway venv /tmp/litellm-venv; see gateway_procs.py).

Per point: `wrk` for `--seconds` (req/s and p50/p99 latency to the end of the answer), then
the asyncio probe of gateway_load.py at the same concurrency for `--ttfb-seconds` (p50/p99
time to the first body byte; its rate counts every answer it started, drained after its
deadline). Plain answers take req/s and latency from wrk (the probe, in Python, tops out
below a fast engine: compare `probe/s` with `wrk/s`). Streams take them from the probe:
wrk counts only the answers that end inside its window, so with 1.3 s streams its rate
jumps by a third with one more or fewer per connection. CPU is the proxy's (gateway, nginx
master + worker, LiteLLM) and the engine's, in % of one core over the wrk run. Everything
shares this machine's CPUs (printed at the top) with wrk and the probe, so figures are for
this machine; ratios between targets of one run are what to read. On a busy machine
`--rounds 3` measures each point's targets three times in turn and keeps each one's median
(by req/s). The default run takes about 4 minutes, about 9 with --nginx --litellm (LiteLLM's
queue drains slowly).
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

from gateway_load import Samples, WrkResult, lua_script, run_wrk, ttfb  # noqa: E402
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
    probe: Samples
    proxy_cpu: float | None
    engine_cpu: float

    @property
    def rate(self) -> float:
        """wrk's rate for plain answers; the probe's for streams (see the module doc)."""
        return self.probe.rate if self.stream else self.wrk.rate

    def latency_ms(self, q: float) -> float:
        if self.stream:
            return self.probe.percentile_ms(q, total=True)
        return self.wrk.p50_ms if q == 0.5 else self.wrk.p99_ms

    def line(self, direct: Row | None) -> str:
        ratio = ratio_text(self.rate, direct.rate) if direct else "-"
        cpu = "-" if self.proxy_cpu is None else f"{self.proxy_cpu:.0f}%"
        mode = "stream" if self.stream else "plain"
        return (
            f"{self.profile:10s} {mode:6s} {self.concurrency:4d} {self.target:8s}"
            f" {self.rate:9.1f} {ratio:>7s}"
            f" {self.latency_ms(0.5):8.2f} {self.latency_ms(0.99):8.2f}"
            f" {self.probe.percentile_ms(0.5):8.2f} {self.probe.percentile_ms(0.99):8.2f}"
            f" {self.wrk.rate:9.1f} {self.probe.rate:8.1f} {len(self.probe.ttfb_s):6d}"
            f" {cpu:>6s} {self.engine_cpu:5.0f}% {self.wrk.errors + self.probe.errors:5d}"
        )


HEADER = (
    f"{'engine':10s} {'mode':6s} {'c':>4s} {'target':8s} {'req/s':>9s} {'/direct':>7s}"
    f" {'p50 ms':>8s} {'p99 ms':>8s} {'ttfb p50':>8s} {'ttfb p99':>8s} {'wrk/s':>9s}"
    f" {'probe/s':>8s} {'n':>6s} {'proxy':>6s} {'engine':>6s} {'errs':>5s}"
)
HEADER_NOTE = (
    "req/s and p50/p99: wrk's for plain answers, the probe's for streams (wrk drops the\n"
    "answers still streaming when its window ends); ttfb: the probe's, to the first body\n"
    "byte, n answers; proxy and engine: CPU in % of one core over the wrk run."
)


def median_row(rows: list[Row]) -> Row:
    """Of one target's rounds at one point, the one with the median rate."""
    return sorted(rows, key=lambda row: row.rate)[(len(rows) - 1) // 2]


def ratio_text(value: float, base: float) -> str:
    if not base:
        return "-"
    ratio = value / base
    return f"{ratio:.3f}x" if ratio < 0.1 else f"{ratio:.2f}x"


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
        profile.name, stream, concurrency, target.name, result, samples, proxy_cpu, engine_cpu
    )


def summary(rows: list[Row]) -> list[str]:
    """Per point: each target against direct, the gateway against LiteLLM, what it adds."""
    lines: list[str] = []
    index = {(r.profile, r.stream, r.concurrency, r.target): r for r in rows}
    points = dict.fromkeys((r.profile, r.stream, r.concurrency) for r in rows)
    for profile, stream, c in points:
        direct = index.get((profile, stream, c, "direct"))
        if direct is None:
            continue
        parts: list[str] = []
        for target in ("gateway", "nginx", "litellm"):
            row = index.get((profile, stream, c, target))
            if row is None:
                continue
            part = f"{target} {ratio_text(row.rate, direct.rate)}"
            if target == "gateway":
                added = row.latency_ms(0.5) - direct.latency_ms(0.5)
                added_ttfb = row.probe.percentile_ms(0.5) - direct.probe.percentile_ms(0.5)
                part += f" (p50 {added:+.2f} ms, ttfb p50 {added_ttfb:+.2f} ms"
                litellm = index.get((profile, stream, c, "litellm"))
                if litellm is not None and litellm.rate:
                    part += f", {row.rate / litellm.rate:.1f}x LiteLLM"
                part += ")"
            parts.append(part)
        mode = "stream" if stream else "plain"
        if parts:
            lines.append(f"{profile} {mode:6s} c={c:<3d}: " + "; ".join(parts))
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="wrk run per point")
    parser.add_argument("--ttfb-seconds", type=float, default=2.0, help="TTFB probe per point")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY))
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="measure each point's targets this many times in turn; print each one's median",
    )  # fmt: skip
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
    if args.seconds < 1 or args.ttfb_seconds <= 0 or min(args.concurrency) < 1 or args.rounds < 1:
        parser.error("--seconds must be >= 1 (wrk counts whole seconds), the rest above 0")
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
        print(HEADER_NOTE)
        print(HEADER)
        rows: list[Row] = []
        for profile in profiles:
            for stream in modes:
                for concurrency in args.concurrency:
                    point = [
                        measure(
                            work, target, profile, stream, concurrency,
                            engine_pids[profile.name], args,
                        )
                        for _ in range(args.rounds)
                        for target in targets
                    ]  # fmt: skip
                    chosen = [median_row([r for r in point if r.target == t.name]) for t in targets]
                    for row in chosen:
                        print(row.line(chosen[0]), flush=True)
                    rows.extend(chosen)
        print("\nagainst direct, same run (req/s ratios; what the gateway adds):")
        for line in summary(rows):
            print("  " + line)
        bad = [r for r in rows if r.wrk.errors or r.probe.errors or math.isnan(r.latency_ms(0.5))]
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
