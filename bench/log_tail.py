"""Time of a log tail on big logs: an 80 MB single line, and 20 MB of `\\r` progress output.

Run: .venv/bin/python bench/log_tail.py [--mb 80] [--repeat 20]
Before the bounded backwards read, `tail=1` of the 80 MB single line took about 60 s (it
rescanned everything read so far after every block) and returned all 80 MB.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sagellmd.runtime.logs import read_tail  # noqa: E402


def timed(path: Path, count: int, repeat: int) -> tuple[float, int, bool]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        tail = read_tail(path, count)
        times.append(time.perf_counter() - started)
    returned = sum(len(line.encode()) for line in tail.lines)
    return statistics.median(times), returned, tail.truncated


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=80)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sagellm-bench-") as folder:
        single = Path(folder) / "single-line.log"
        with single.open("wb") as handle:
            chunk = b"x" * (1 << 20)
            for _ in range(args.mb):
                handle.write(chunk)
        took, returned, truncated = timed(single, 1, args.repeat)
        print(
            f"tail=1 of a {args.mb} MB single-line log: {took * 1000:.2f} ms median"
            f" ({returned} bytes returned, truncated={truncated})"
        )
        progress = Path(folder) / "progress.log"
        progress.write_bytes(b"".join(b"progress %07d%%\r" % i for i in range(1_300_000)))
        took, returned, truncated = timed(progress, 100, args.repeat)
        size = progress.stat().st_size / 1e6
        print(
            f"tail=100 of a {size:.0f} MB log of \\r progress lines: {took * 1000:.2f} ms median"
            f" ({returned} bytes returned, truncated={truncated})"
        )


if __name__ == "__main__":
    main()
