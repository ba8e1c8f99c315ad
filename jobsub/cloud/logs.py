"""The log policy of the scheduler backends, written once: the provider's stream, else the folder.

A cloud task's output goes to its provider's log service (CloudWatch Logs,
Cloud Logging, the pod's log) as it comes, live; the worker writes no copy
into the folder.  ``job.stdout()`` then asks::

    the task wrote its result, but the provider does not say its job ended yet?
        wait for the end, at most wait_s (its last lines are still on their way)
    read the provider's stream (the backend's reader: paced, capped)
        nothing there (not started, forgotten, never shipped) ─> what the folder has

A backend supplies two questions (has the job ended, what does its stream
say) and keeps only its provider's reading.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..folder import JobFolder

__all__ = ["LOG_WAIT_S", "provider_or_folder_logs"]

LOG_WAIT_S = 15.0
"""How long a finished task's job is given to end before its stream is read."""


def provider_or_folder_logs(
    folder: JobFolder,
    index: int,
    rank: int,
    *,
    ended: Callable[[], bool],
    read: Callable[[], str | None],
    wait_s: float = LOG_WAIT_S,
    poll_s: float = 0.5,
) -> tuple[str | None, str | None]:
    """stdout and stderr of one task: the provider's stream (both streams are it), else the folder's.

    Args:
        folder, index, rank: the task.
        ended: whether the provider says the task's job ended (asked again while waiting).
        read: the task's whole stream; None if the provider has none (yet, or any more).
        wait_s: at most this long for a task whose result is written to end first, so that
            ``job.stdout()`` right after ``job.result()`` has the whole output.
        poll_s: how often ``ended`` is asked while waiting.
    """
    deadline = time.monotonic() + wait_s
    while not ended() and folder.has_result(index, rank) and time.monotonic() < deadline:
        time.sleep(poll_s)
    text = read()
    if not text:  # no stream (yet, or any more): whatever the folder has
        out, err = folder.read_log(index, rank, "out"), folder.read_log(index, rank, "err")
        if out is not None or err is not None or text is None:
            return out, err
    return text, text
