"""Ending tasks that never ran: cancelled while held, duplicates of a cached call, dependents of a job that failed.

Everything here works on folders and backends only (no ``Job`` handle), so
``Job.cancel()`` can reach the jobs waiting on it from ``jobsub.job`` without
importing the layer that releases held submissions (``jobsub.hold``, which
sits above the ``Job`` future and uses these too).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from . import errors
from .backends.base import get_backend
from .calls import Outcome
from .errors import DependencyError, JobCancelledError, JobError, JobsubError
from .folder import JobFolder, unmark_held
from .states import JobState
from .submission import held_id, task_id

__all__ = ["cancel_dependents", "cancel_held", "dependency_error", "end_hold_if_over", "end_unstarted", "summary"]

logger = logging.getLogger("jobsub")


def summary(error: BaseException) -> str:
    """What happened to an upstream, in a few words: "raised ValueError: bad input", "was cancelled (...)"."""
    text = str(error).strip()
    if isinstance(error, errors.FailedJobError) and " failed with " in text:
        return "raised " + text.split(" failed with ", 1)[1].splitlines()[0]
    if isinstance(error, errors.DependencyError):
        return f"did not run ({error.reason or 'a dependency failed'})"
    if isinstance(error, errors.JobCancelledError):
        return f"was cancelled ({error.reason})" if error.reason else "was cancelled"
    if isinstance(error, errors.JobError) and error.state is not None:
        return f"ended {error.state} ({error.reason})" if error.reason else f"ended {error.state}"
    first = text.splitlines()[0] if text else ""
    if not isinstance(error, errors.JobsubError):  # the function's own exception (debug)
        return f"raised {type(error).__name__}: {first}"
    return f"ended with {type(error).__name__}: {first}" if first else f"ended with {type(error).__name__}"


def end_unstarted(folder: JobFolder, index: int, ranks: int, error: JobError) -> bool:
    """End task ``index`` without running it: its exit record, then a result carrying ``error``.

    The exit record comes first (a supervisor does not start a task that has
    one); results are created once, so a task that ended meanwhile keeps its
    own.  Returns False if it had ended already.
    """
    state = str(error.state or JobState.CANCELLED)
    recorded = folder.write_exit(index, state, error.reason or str(error))
    outcome = Outcome(
        ok=False, exception=error, exc_type=f"jobsub.errors.{type(error).__name__}", message=str(error),
        traceback=f"jobsub.errors.{type(error).__name__}: {error}\n",
    )
    wrote = False
    for rank in range(ranks):
        with contextlib.suppress(FileExistsError):
            folder.write_result(index, rank, outcome.dumps(), ok=False)
            wrote = True
    return wrote or recorded


def dependency_error(upstream_id: str, what: str) -> DependencyError:
    """What a task that will never run because of its upstream carries as its result."""
    reason = f"a dependency failed: job {upstream_id} {what}"
    return DependencyError(reason, state=JobState.CANCELLED, reason=reason, upstream=upstream_id)


def end_hold_if_over(folder: JobFolder, meta: dict[str, Any]) -> bool:
    """Unmark a held submission whose every task ended (nothing is left to release); True if it did."""
    if not meta.get("held") or meta.get("submissions") or len(folder.ended()) < int(meta["count"]):
        return False
    unmark_held(folder.storage, folder.key)
    return True


def cancel_held(folder: JobFolder, index: int, job_id: str) -> bool:
    """``job.cancel()`` of a held job: it ends CANCELLED without being submitted."""
    error = JobCancelledError(
        "cancelled while held (it was never submitted)", state=JobState.CANCELLED, reason="cancelled while held",
        job_id=job_id,
    )
    meta = folder.read_meta()
    if not end_unstarted(folder, index, int(meta["ranks"]), error):
        return False
    meta = folder.read_meta()
    real = task_id(meta, index)
    if real is not None:  # released meanwhile: the backend must not run it
        with contextlib.suppress(JobsubError):
            get_backend(meta["backend"], meta["backend_config"]).cancel([real])
    end_hold_if_over(folder, meta)  # the last task of a held submission to end ends the hold
    return True


def cancel_dependents(folder: JobFolder, index: int, job_id: str, what: str, seen: set[Any] | None = None) -> None:
    """End every task waiting on task ``index`` of ``folder`` (``dependents/``), transitively."""
    seen = set() if seen is None else seen
    try:
        records = folder.dependents()
    except OSError as exc:
        logger.warning("cannot read the dependents of %s: %s", folder.url, exc)
        return
    for rec in records:
        down = JobFolder.from_url(rec["url"])
        for up_index, down_index in rec.get("pairs", []):
            if up_index != index or (down.url, down_index) in seen:
                continue
            seen.add((down.url, down_index))
            try:
                meta = down.read_meta()
                if not end_unstarted(down, down_index, int(meta["ranks"]), dependency_error(job_id, what)):
                    continue
                real = task_id(meta, down_index)
                if real is not None:
                    get_backend(meta["backend"], meta["backend_config"]).cancel([real])
                else:
                    end_hold_if_over(down, meta)
            except (JobsubError, OSError) as exc:
                logger.warning("cancelling task %d of %s, which waits on %s: %s", down_index, down.url, job_id, exc)
                continue
            name = real if real is not None else held_id(down.key, down_index, bool(meta["array"]))
            logger.info("cancelled %s: it waits on %s, which %s", name, job_id, what)
            cancel_dependents(down, down_index, name, f"was cancelled (job {job_id} {what})", seen)
