"""Waiting on many jobs: ``jobsub.wait``, ``jobsub.results``, ``as_completed``, with a progress bar.

::

    jobs = ex.map_array(train, configs)
    jobsub.wait(jobs)                          # a bar where a person watches (terminal, notebook)
    values = jobsub.results(jobs, progress=True)
    for job in jobsub.helpers.as_completed(jobs, progress=True): ...

One loop looks at every job still running (their handles share one poller
per backend: one backend call per interval, whatever the number of jobs)
and feeds the bar; the bar itself costs nothing per job.  It shows the
counts by state and, as they happen, the failed tasks with their error's
first line.  The bar is tqdm's (``tqdm.auto``: the widget in Jupyter),
imported only when one is drawn; without tqdm, ``progress=True`` says how to
get it and the wait goes on without a bar.

``progress=None`` (the default) draws a bar only where someone watches (stderr
is a terminal, or a notebook runs the code) and only for a wait longer than
``BAR_DELAY_S``: scripts, pipes and CI logs stay quiet.
"""

from __future__ import annotations

import collections
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from .job import Job
from .polling import sleep_schedule
from .report import first_error_line

__all__ = ["BAR_DELAY_S", "Progress", "as_completed", "results", "wait"]

logger = logging.getLogger("jobsub")

R = TypeVar("R")

BAR_DELAY_S = 3.0
"""With ``progress=None``, a wait shorter than this draws no bar at all."""


def watched() -> bool:
    """Whether a person watches this process: a notebook kernel, or stderr on a terminal."""
    shell = sys.modules.get("IPython")
    if shell is not None:
        ip = getattr(shell, "get_ipython", lambda: None)()
        if ip is not None and "IPKernelApp" in getattr(ip, "config", {}):
            return True
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """Counts by state and failures of ``jobs``, drawn as a tqdm bar (or not drawn at all).

    ``update(done)`` is called by the one waiting loop with the jobs that
    ended since its last call; the states of the others come from their
    shared poller (no backend call per job).
    """

    def __init__(self, jobs: Sequence[Job[Any]], progress: bool | None, desc: str = "jobs") -> None:
        self.total = len(jobs)
        self.finished = 0
        self.failed: list[tuple[Job[Any], str]] = []
        self.bar: Any = None
        self.lines: list[str] = []
        """What the bar wrote beside itself (the failures), kept for whoever asks (tests, logs)."""
        enabled = watched() if progress is None else progress
        if enabled and self.total:
            self.bar = _make_bar(self.total, desc, delay=BAR_DELAY_S if progress is None else 0.0)

    def update(self, ended: Sequence[Job[Any]], running: Sequence[Job[Any]]) -> None:
        for job in ended:
            self.finished += 1
            state = job.state
            if str(state) != "COMPLETED":
                why = _error_line(job)
                self.failed.append((job, why))
                self._write(f"task {job.index} ({job.job_id}) {state}: {why}")
        if self.bar is None:
            return
        counts = collections.Counter(str(job.state) for job in running)
        if self.failed:
            counts["FAILED"] += len(self.failed)
        counts["COMPLETED"] = self.finished - len(self.failed)
        self.bar.set_postfix_str(", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if n), refresh=False)
        self.bar.update(self.finished - self.bar.n)

    def _write(self, line: str) -> None:
        self.lines.append(line)
        if self.bar is not None:
            self.bar.write(line, file=self.bar.fp)  # beside the bar, on its stream
        else:
            logger.info("%s", line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _make_bar(total: int, desc: str, delay: float) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        if delay == 0.0:  # asked for by name: say why there is none
            logger.warning("progress=True needs tqdm: pip install 'jobsub[progress]' (or tqdm)")
        return None
    return tqdm(total=total, desc=desc, unit="job", delay=delay, dynamic_ncols=True)


def _error_line(job: Job[Any]) -> str:
    try:
        error = job.exception(timeout=0)
    except TimeoutError:
        return str(job.state)
    except Exception as exc:  # an unreadable result is a failure too
        return first_error_line(exc)
    return first_error_line(error) if error is not None else str(job.state)


def _ended(jobs: Sequence[Job[R]], timeout: float | None, poll_s: float | None,
           progress: bool | None) -> Iterator[Job[R]]:
    """Yield each job as it ends (any state), feeding one progress bar; ``TimeoutError`` after ``timeout`` s."""
    start = time.monotonic()
    remaining = list(jobs)
    schedule: Iterator[float] = iter(sleep_schedule(first=0.01, cap=1.0)) if poll_s is None else _constant(poll_s)
    with Progress(jobs, progress) as bar:
        while remaining:
            ended = [job for job in remaining if job.done()]
            if ended:
                remaining = [job for job in remaining if job not in ended]
            bar.update(ended, remaining)
            yield from ended
            if not remaining:
                return
            if timeout is not None and time.monotonic() - start >= timeout:
                raise TimeoutError(f"{len(remaining)} of {len(jobs)} jobs not done after {timeout:g} s")
            time.sleep(next(schedule))


def _constant(seconds: float) -> Iterator[float]:
    while True:
        yield seconds


def wait(jobs: Sequence[Job[Any]], timeout: float | None = None, progress: bool | None = None) -> None:
    """Block until every job in ``jobs`` ended (in any state); builtin ``TimeoutError`` after ``timeout`` s.

    Args:
        progress: a bar with counts by state and failures as they happen;
            None: only where a person watches, and only past ``BAR_DELAY_S``.
    """
    for _ in _ended(jobs, timeout, None, progress):
        pass


def results(jobs: Sequence[Job[R]], timeout: float | None = None, progress: bool | None = None,
            return_exceptions: bool = False) -> list[R | BaseException]:
    """Every job's result, in order, once all ended; the first failure raised (or, with
    ``return_exceptions``, put in its place, as ``asyncio.gather`` does)."""
    wait(jobs, timeout, progress)
    if not return_exceptions:
        return [job.result() for job in jobs]
    out: list[R | BaseException] = []
    for job in jobs:
        error = job.exception()
        out.append(error if error is not None else job.result())
    return out


def as_completed(jobs: Sequence[Job[R]], timeout: float | None = None, poll_frequency: float | None = None,
                 progress: bool | None = None) -> Iterator[Job[R]]:
    """Yield jobs as they end (in any state); builtin ``TimeoutError`` after ``timeout`` s."""
    return _ended(jobs, timeout, poll_frequency, progress)
