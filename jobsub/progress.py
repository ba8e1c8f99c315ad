"""Waiting on many jobs: ``jobsub.wait``, with a progress bar where a person watches.

One loop asks every job's state (their handles share one poller per
backend: one backend call per interval whatever the number of jobs) and
feeds the bar; a bar costs nothing per job.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from .job import Job
from .polling import sleep_schedule

__all__ = ["wait"]


def wait(jobs: Sequence[Job[Any]], timeout: float | None = None) -> None:
    """Block until every job in ``jobs`` is done; builtin ``TimeoutError`` after ``timeout`` seconds."""
    start = time.monotonic()
    remaining = list(jobs)
    for delay in sleep_schedule(first=0.01, cap=1.0):
        remaining = [job for job in remaining if not job.done()]
        if not remaining:
            return
        if timeout is not None and time.monotonic() - start >= timeout:
            raise TimeoutError(f"{len(remaining)} of {len(jobs)} jobs not done after {timeout:g} s")
        time.sleep(delay)
