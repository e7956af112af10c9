"""The daemon's background downloads: one thread each, progress reported as short messages."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from sagellmd.errors import ConflictError, SagellmError
from sagellmd.gpu.estimate import GIB
from sagellmd.models.download import download_model

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 5.0
# Finished downloads kept for `GET /v1/models/local`; their events stay in the event log.
KEEP_FINISHED = 20
# The last message of a job starts with one of these (after "<job id> <model>: ").
DONE, FAILED = "done in", "failed:"
Reporter = Callable[[str], None]
Downloader = Callable[..., Path]


class _NullFile:
    """Where the reporting progress bars draw: nowhere (the daemon has no terminal)."""

    def write(self, _text: str) -> int:
        return 0

    def flush(self) -> None:
        pass


def reporting_tqdm(on_bytes: Callable[[int, int], None]) -> type[tqdm]:
    """A tqdm class for snapshot_download that hands byte counts to `on_bytes(done, total)`.

    snapshot_download makes several bars (files, bytes transferred, bytes written); only the
    byte ones (unit "B") are passed on, so the count survives changes in how it splits them.
    """

    class ReportingTqdm(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)  # huggingface_hub's own bars take a name; tqdm does not
            kwargs["file"] = _NullFile()
            kwargs["disable"] = False  # a disabled tqdm stops counting
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            if self.unit == "B":
                on_bytes(int(self.n), int(self.total or 0))
            return shown

    return ReportingTqdm


@dataclass
class DownloadJob:
    """One background download and what is known about it so far."""

    id: str
    model: str
    revision: str | None
    allow_patterns: list[str] | None
    started_at: float
    state: str = "running"  # running, done, failed
    done_bytes: int = 0
    total_bytes: int = 0
    finished_at: float | None = None
    message: str = "starting"
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "revision": self.revision,
            "allow_patterns": self.allow_patterns,
            "state": self.state,
            "done_bytes": self.done_bytes,
            "total_bytes": self.total_bytes,
            "message": self.message,
            "path": self.path,
        }


def _progress_text(job: DownloadJob) -> str:
    done = job.done_bytes / GIB
    if job.total_bytes:
        percent = 100 * job.done_bytes / job.total_bytes
        return f"{percent:.0f}% ({done:.2f} of {job.total_bytes / GIB:.2f} GiB)"
    return f"{done:.2f} GiB"


class DownloadJobs:
    """Starts downloads in threads and reports start, progress, end and failure via `report`.

    `report` is called from the download threads; it must be safe to call from any thread.
    """

    def __init__(
        self,
        report: Reporter,
        download: Downloader = download_model,
        clock: Callable[[], float] = time.monotonic,
        progress_every_s: float = PROGRESS_EVERY_S,
    ) -> None:
        self._report = report
        self._download = download
        self._clock = clock
        self._progress_every_s = progress_every_s
        self._jobs: dict[str, DownloadJob] = {}
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def list(self) -> list[DownloadJob]:
        with self._lock:
            return list(self._jobs.values())

    def start(
        self, model: str, revision: str | None, allow_patterns: list[str] | None
    ) -> DownloadJob:
        with self._lock:
            for job in self._jobs.values():
                if job.model == model and job.state == "running":
                    raise ConflictError(
                        f"{model} is already being downloaded ({job.id}); follow it with"
                        " `sagellm events -f`",
                        {"download": job.id},
                    )
            job = DownloadJob(
                f"dl-{next(self._numbers)}", model, revision, allow_patterns, self._clock()
            )
            self._jobs[job.id] = job
            finished = [key for key, old in self._jobs.items() if old.state != "running"]
            for key in finished[: max(0, len(finished) - KEEP_FINISHED)]:
                del self._jobs[key]
        threading.Thread(
            target=self._run, args=(job,), name=f"sagellm-{job.id}", daemon=True
        ).start()
        return job

    def _say(self, job: DownloadJob, text: str) -> None:
        job.message = text
        self._report(f"{job.id} {job.model}: {text}")

    def _run(self, job: DownloadJob) -> None:
        what = job.model + (f" (revision {job.revision})" if job.revision else "")
        patterns = f", only {' '.join(job.allow_patterns)}" if job.allow_patterns else ""
        self._say(job, f"download of {what} started{patterns}")
        last = [self._clock()]
        # snapshot_download fetches files in several threads, each updating the bars.
        counting = threading.Lock()

        def on_bytes(done: int, total: int) -> None:
            with counting:
                job.done_bytes = max(job.done_bytes, done)
                job.total_bytes = max(job.total_bytes, total)
                now = self._clock()
                if now - last[0] < self._progress_every_s:
                    return
                last[0] = now
            self._say(job, _progress_text(job))

        try:
            path = self._download(
                job.model, job.revision, job.allow_patterns, tqdm_class=reporting_tqdm(on_bytes)
            )
        except SagellmError as exc:
            self._finish(job, "failed", f"{FAILED} {exc.message}")
        except Exception as exc:  # a thread has no caller to hand this to; say it instead
            log.exception("download=%s model=%s crashed", job.id, job.model)
            self._finish(job, "failed", f"{FAILED} {type(exc).__name__}: {exc}")
        else:
            job.path = str(path)
            took = self._clock() - job.started_at
            self._finish(job, "done", f"{DONE} {took:.0f}s: {path}")

    def _finish(self, job: DownloadJob, state: str, text: str) -> None:
        job.state, job.finished_at = state, self._clock()
        self._say(job, text)


def job_outcome(job_id: str, message: str) -> str | None:
    """'done' or 'failed' when `message` is the last event of download `job_id`, else None."""
    prefix, _, text = message.partition(": ")
    if prefix.split(" ", 1)[0] != job_id:
        return None
    if text.startswith(DONE):
        return "done"
    return "failed" if text.startswith(FAILED) else None
