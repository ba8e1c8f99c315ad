"""AWS Batch states and failure reasons as jobsub states: the one mapping, and why jobs failed.

Native states map through ``NATIVE``; a FAILED job is classified from what
AWS says about it (``statusReason``, the container's ``reason`` and
``exitCode``)::

    statusReason "jobsub: ..."              -> CANCELLED      (our TerminateJob: cancel, stuck RUNNABLE)
    container reason "OutOfMemoryError..."  -> OUT_OF_MEMORY  (or exit 137 with a memory reason)
    "Job attempt duration exceeded timeout" -> TIMEOUT        (or no exit code after the whole limit)
    "Host EC2 ..."                          -> PREEMPTED      (Spot reclaimed, retries used up)
    CannotPullContainerError, role errors   -> FAILED, naming the image and what to check
    "Dependent Job failed", exit 76         -> CANCELLED      (a job passed as an argument failed)
    terminated / cancelled by someone else  -> CANCELLED
    anything else                           -> FAILED "exit code N: reason"

An array's children are counted, not described (``parent``: its
``statusSummary`` in the tracker's terms, jobsub.cloud.arrays).  Functions
only: they take the dicts boto3 returns (a DescribeJobs entry or a ListJobs
summary), so they are tested on AWS-shaped data without a server.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from ...cloud.arrays import Parent
from ...states import JobState, Status
from .._exits import DEPENDENCY_FAILED, killed_for_memory, timed_out, worker_exit

__all__ = ["NATIVE", "failure", "job_status", "parent"]

NATIVE: dict[str, JobState] = {
    "SUBMITTED": JobState.PENDING,
    "PENDING": JobState.PENDING,  # waiting for dependencies
    "RUNNABLE": JobState.PENDING,  # waiting for capacity
    "STARTING": JobState.RUNNING,  # placed; its container is starting
    "RUNNING": JobState.RUNNING,
    "SUCCEEDED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
}
_START_FAILURE = re.compile(
    r"CannotPullContainer|CannotStartContainer|CannotCreateContainer|CannotInspectContainer"
    r"|ResourceInitializationError|ECS was unable to assume the role|InvalidParameterException"
    r"|no basic auth credentials|manifest .* not found|pull access denied",
    re.IGNORECASE,
)
_CANCELLED = re.compile(r"\b(cancel\w*|terminat\w*)\b", re.IGNORECASE)


def _texts(job: Mapping[str, Any]) -> tuple[str, str, int | None]:
    """statusReason, the container's reason, and its exit code (the last attempt's if missing)."""
    container = job.get("container") or {}
    reason = str(job.get("statusReason") or "")
    c_reason = str(container.get("reason") or "")
    code = container.get("exitCode")
    attempts = job.get("attempts") or []
    if attempts:
        last = attempts[-1]
        reason = reason or str(last.get("statusReason") or "")
        c_reason = c_reason or str((last.get("container") or {}).get("reason") or "")
        code = code if code is not None else (last.get("container") or {}).get("exitCode")
    return reason, c_reason, code


def _elapsed_s(job: Mapping[str, Any]) -> float | None:
    started, stopped = job.get("startedAt"), job.get("stoppedAt")
    if not started or not stopped:
        return None
    return (int(stopped) - int(started)) / 1000


def failure(job: Mapping[str, Any], timeout_s: int | None, image: Callable[[], str]) -> Status:
    """How a FAILED job ended (see the module's table); ``image`` is asked only to name it."""
    reason, c_reason, code = _texts(job)
    both = f"{reason} {c_reason}".strip()
    if reason.startswith("jobsub:"):
        return Status(JobState.CANCELLED, reason.removeprefix("jobsub:").strip())
    if c_reason.startswith("OutOfMemoryError") or killed_for_memory(code, "memory" in both.lower()):
        return Status(JobState.OUT_OF_MEMORY, f"killed for memory (exit code {code}): {both}")
    elapsed = _elapsed_s(job)
    if "attempt duration exceeded" in both.lower() or (
        code is None and not c_reason and timed_out(elapsed, timeout_s)
    ):
        return Status(JobState.TIMEOUT, f"hit its time limit of {timeout_s or '?'} s (AWS: {both or 'no reason given'})")
    if reason.startswith("Host EC2"):
        return Status(JobState.PREEMPTED, f"its Spot instance was reclaimed, retries used up: {reason}")
    if _START_FAILURE.search(both):
        return Status(
            JobState.FAILED,
            f"the container of image {image() or '?'} could not start: {both}. Check that the image exists "
            "and that the compute environment may pull it (execution role, ECR policy), and the job role",
        )
    if "dependent job" in both.lower() or worker_exit(code) is DEPENDENCY_FAILED:
        return Status(JobState.CANCELLED, f"a dependency failed: {both or f'exit code {code}'}")
    if _CANCELLED.search(reason):
        return Status(JobState.CANCELLED, reason)
    if code is None and not both and job.get("dependsOn") and not job.get("startedAt"):
        return Status(JobState.CANCELLED, "a dependency failed (AWS Batch did not start it)")
    if code is None and not both:
        return Status(
            JobState.FAILED,
            f"AWS Batch gives no exit code and no reason: the container of image {image() or '?'} may never "
            "have started (is the image on the compute environment's registry? does the job role exist?)",
        )
    said = (worker_exit(code) or Status(JobState.FAILED, f"exit code {code}")).reason
    return Status(JobState.FAILED, f"{said}: {both}" if both else said)


def job_status(job: Mapping[str, Any], timeout_s: int | None, image: Callable[[], str]) -> Status:
    """The status of a plain job (or of an array child) from its description or summary."""
    native = str(job.get("status", ""))
    if native == "FAILED":
        return failure(job, timeout_s, image)
    state = NATIVE.get(native, JobState.UNKNOWN)
    reason = str(job.get("statusReason") or "") if native == "RUNNABLE" else ""
    return Status(state, reason)


_COUNTED: dict[str, JobState] = {**NATIVE, "STARTING": JobState.PENDING}
"""An array child's count: ``STARTING`` ones are not running yet (ListJobs RUNNING does not list them)."""
_STARTED = ("STARTING", "RUNNING", "SUCCEEDED", "FAILED")


def parent(job: Mapping[str, Any]) -> Parent:
    """A DescribeJobs entry as the array tracker reads it (an array: its ``statusSummary``)."""
    native, reason = str(job.get("status", "")), str(job.get("statusReason") or "")
    common: dict[str, Any] = {
        "final": native in ("SUCCEEDED", "FAILED"),
        "cancelled": reason.removeprefix("jobsub:").strip() if reason.startswith("jobsub:") else "",
    }
    size = int((job.get("arrayProperties") or {}).get("size") or 0)
    if not size:
        return Parent(str(job["jobId"]), job, queued=reason if native == "RUNNABLE" else None, **common)
    summary = {k: int(v) for k, v in ((job.get("arrayProperties") or {}).get("statusSummary") or {}).items()}
    counts: dict[JobState, int] = {}
    for name, n in summary.items():
        state = _COUNTED.get(name, JobState.PENDING)
        counts[state] = counts.get(state, 0) + n
    # waiting for capacity with none started: stuck RUNNABLE?
    never_started = not sum(summary.get(s, 0) for s in _STARTED) and summary.get("RUNNABLE", 0) > 0
    return Parent(str(job["jobId"]), job, True, counts, size, queued=reason if never_started else None, **common)
