"""Per-task state from a Job and its not-yet-succeeded pods: the backend's failure table.

Judged by the main container (``manifest.CONTAINER``); sidecars never decide.

=================================================  ==============================================
what the pods of index i show                      jobsub
=================================================  ==============================================
more than DISRUPTION_RETRIES pods disrupted        PREEMPTED (even while a replacement runs)
a pod Pending (unscheduled, pulling, waiting)      PENDING, with the scheduler's/kubelet's reason
a pod Running                                      RUNNING
the last failed pod, retries left                  PENDING ("retrying after ...")
main container OOMKilled                           OUT_OF_MEMORY
pod reason DeadlineExceeded                        TIMEOUT (activeDeadlineSeconds from timeout_min)
Evicted/Preempting or DisruptionTarget, no more    PREEMPTED (a failed Job's last pod)
other failure                                      FAILED (exit code and the kubelet's words)
no pod listed                                      COMPLETED if the Job says so, else PENDING
=================================================  ==============================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...states import JobState, Status
from .manifest import CONTAINER, INDEX_KEY, RETRIES_ANNOTATION

__all__ = ["PULL_ERRORS", "index_of", "main_status", "over_disrupted", "task_status"]

PULL_ERRORS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError"})
DISRUPTION_RETRIES = 3
"""Disruptions a task survives (they do not spend its retries) before it is reported PREEMPTED."""
_DISRUPTIONS = frozenset({"Evicted", "Preempting", "Shutdown", "NodeShutdown", "Terminated"})


def index_of(pod: Any) -> int | None:
    value = (pod.metadata.annotations or {}).get(INDEX_KEY)
    return int(value) if value is not None else None


def main_status(pod: Any) -> Any:
    """The container status of the main container, or None."""
    for status in pod.status.container_statuses or []:
        if status.name == CONTAINER:
            return status
    return None


def disrupted(pod: Any) -> bool:
    if (pod.status.reason or "") in _DISRUPTIONS:
        return True
    return any(c.type == "DisruptionTarget" and c.status == "True" for c in pod.status.conditions or [])


def pending_reason(pod: Any) -> str:
    """Why a pod waits: the scheduler's condition, else the main container's waiting state."""
    for condition in pod.status.conditions or []:
        if condition.type == "PodScheduled" and condition.status == "False":
            return f"{condition.reason}: {condition.message}" if condition.message else str(condition.reason)
    main = main_status(pod)
    waiting = main.state.waiting if main is not None and main.state else None
    if waiting is not None and waiting.reason:
        return f"{waiting.reason}: {waiting.message}" if waiting.message else str(waiting.reason)
    return ""


def failure(pod: Any) -> Status:
    """The final status one failed pod stands for."""
    main = main_status(pod)
    terminated = main.state.terminated if main is not None and main.state else None
    words = f"pod {pod.metadata.name}"
    if pod.status.message:
        words += f": {pod.status.message}"
    if terminated is not None and terminated.reason == "OOMKilled":
        return Status(JobState.OUT_OF_MEMORY, f"{words}: container {CONTAINER} OOMKilled (exit {terminated.exit_code})")
    if pod.status.reason == "DeadlineExceeded":
        return Status(JobState.TIMEOUT, f"{words} (activeDeadlineSeconds)")
    if disrupted(pod):
        return Status(JobState.PREEMPTED, f"{words} ({pod.status.reason or 'DisruptionTarget'})")
    if terminated is not None:
        return Status(JobState.FAILED, f"{words}: exit code {terminated.exit_code} ({terminated.reason})")
    return Status(JobState.FAILED, f"{words}: {pod.status.reason or 'failed'}")


def over_disrupted(pods: Sequence[Any]) -> Status | None:
    """PREEMPTED if more of an index's pods were disrupted than are retried without counting.

    The Job's ``podFailurePolicy`` ignores disruptions, so its controller would replace the
    pod for ever: the limit is jobsub's, judged from the failed pods (they stay listed until
    the Job is deleted), so every process reads the same, whatever runs now.
    """
    hit = sorted((p for p in pods if p.status.phase == "Failed" and disrupted(p)),
                 key=lambda p: p.metadata.creation_timestamp)
    if len(hit) <= DISRUPTION_RETRIES:
        return None
    return Status(JobState.PREEMPTED, f"{failure(hit[-1]).reason}: disrupted {len(hit)} times, more than the "
                                      f"{DISRUPTION_RETRIES} retried without counting")


def task_status(job: Any, pods: Sequence[Any]) -> Status:
    """Status of one index from its Job and its pods (succeeded ones are not listed)."""
    spent = over_disrupted(pods)
    if spent is not None:
        return spent
    live = [p for p in pods if p.status.phase in ("Pending", "Running", None) and not p.metadata.deletion_timestamp]
    running = [p for p in live if p.status.phase == "Running"]
    if running:
        return Status(JobState.RUNNING)
    if live:
        return Status(JobState.PENDING, pending_reason(live[0]))
    failed = sorted((p for p in pods if p.status.phase == "Failed"), key=lambda p: p.metadata.creation_timestamp)
    if failed:
        retries = int((job.metadata.annotations or {}).get(RETRIES_ANNOTATION, "0"))
        counted = [p for p in failed if not disrupted(p)]
        if len(counted) > retries or _job_failed(job):
            return failure(failed[-1])
        return Status(JobState.PENDING, f"retrying after {failure(failed[-1]).reason}")
    if any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or []):
        return Status(JobState.COMPLETED)
    if _job_failed(job):
        return Status(JobState.COMPLETED)  # a failed Job lists this index's pod only if it failed
    return Status(JobState.PENDING, "waiting for a slot of the Job's parallelism")


def _job_failed(job: Any) -> bool:
    return any(c.type == "Failed" and c.status == "True" for c in job.status.conditions or [])
