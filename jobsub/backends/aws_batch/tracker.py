"""The states of many AWS Batch jobs at O(arrays) cost: what ``AWSBatchBackend.states`` asks.

::

    ids "<parent>_<i>" ─> grouped by parent ─> DescribeJobs(parents), 100 ids a call
        plain job ─> its status (a FAILED one without exit code: ListJobs by name has it, moto)
        array     ─> statusSummary counts; ListJobs FAILED when the failed count changed (to
                     explain them), ListJobs RUNNING when some run and some wait (to tell which)
        not returned ─> the folder: result -> COMPLETED, none -> LOST (after a grace period)
        RUNNABLE past runnable_timeout_min ─> TerminateJob, CANCELLED with AWS's reason

Polling a running 10,000-task array costs one DescribeJobs plus at most
ten ListJobs pages, and only when its counts moved.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...folder import JobFolder, lookup_id
from ...states import JobState, Status
from ...storage import Storage
from . import status as st
from .api import Api

__all__ = ["DESCRIBE_MAX_IDS", "LIST_PAGE", "Tracker"]

logger = logging.getLogger("jobsub.aws_batch")

DESCRIBE_MAX_IDS = 100
"""AWS's limit of ids per DescribeJobs call (moto does not enforce it; this module does)."""
LIST_PAGE = 1000
"""ListJobs page size (AWS's maximum)."""


@dataclass
class _ArrayView:
    """What was last listed of one array's children (listed again only when the counts move)."""

    failed_count: int = 0
    failed: dict[int, Mapping[str, Any]] = field(default_factory=dict)
    running_key: tuple[tuple[str, int], ...] = ()
    running: set[int] = field(default_factory=set)


class Tracker:
    """Answers ``states(ids)`` for one backend instance, remembering what it listed.

    Args:
        api: the backend's boto3 calls.
        storage: the executor's folder store (for jobs AWS forgot and for their parameters).
        root: its URL, to name it in reasons.
    """

    lost_grace_s = 120.0
    """A job DescribeJobs does not return is PENDING this long after its submission (AWS's
    listings are eventually consistent), then judged by its folder."""

    def __init__(self, api: Api, storage: Callable[[], Storage], root: str) -> None:
        self.api = api
        self._storage = storage
        self.root = root
        self.is_array: dict[str, bool] = {}
        """Parent id -> submitted as an array (a one-task "array" is a plain job)."""
        self.limits: dict[str, float | None] = {}
        """Parent id -> runnable_timeout_min (read from the folder for jobs of other processes)."""
        self.images: dict[str, str] = {}
        """Job definition ARN -> image, to name it in errors."""
        self._arrays: dict[str, _ArrayView] = {}
        self._runnable_since: dict[str, float] = {}
        self._lock = threading.RLock()

    def states(self, backend_ids: Sequence[str]) -> dict[str, Status]:
        groups: dict[str, list[tuple[str, int | None]]] = {}
        for backend_id in backend_ids:
            parent, sep, index = backend_id.partition("_")
            groups.setdefault(parent, []).append((backend_id, int(index) if sep else None))
        with self._lock:
            described = self.describe(list(groups))
            answer: dict[str, Status] = {}
            for parent, members in groups.items():
                job = described.get(parent)
                if job is None:
                    answer.update(self._vanished(parent, members))
                elif (job.get("arrayProperties") or {}).get("size"):
                    answer.update(self._array_states(job, members))
                else:
                    status = self._plain_status(job)
                    answer.update((backend_id, status) for backend_id, _ in members)
            return answer

    def describe(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        """DescribeJobs, 100 ids a call; jobs AWS does not know are absent."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(job_ids), DESCRIBE_MAX_IDS):
            chunk = job_ids[start : start + DESCRIBE_MAX_IDS]
            for job in self.api.call("batch", "DescribeJobs", jobs=chunk).get("jobs", []):
                found[str(job["jobId"])] = job
        return found

    def _plain_status(self, job: dict[str, Any]) -> Status:
        job_id = str(job["jobId"])
        self.is_array[job_id] = False
        if job.get("status") == "FAILED" and (job.get("container") or {}).get("exitCode") is None:
            job = self._with_exit_code(job)
            if (job.get("container") or {}).get("exitCode") is None and not job.get("statusReason"):
                job = self._with_failed_dependency(job)
        if job.get("status") == "RUNNABLE":
            stuck = self._stuck(job_id, str(job.get("statusReason") or ""))
            if stuck is not None:
                return stuck
        else:
            self._runnable_since.pop(job_id, None)
        return st.job_status(job, _timeout_s(job), lambda: self.image(job))

    def _with_exit_code(self, job: dict[str, Any]) -> dict[str, Any]:
        """moto's DescribeJobs leaves out the exit code that its ListJobs has: merge it in."""
        for summary in self.api.pages(
            "batch", "ListJobs", "jobSummaryList", jobQueue=job["jobQueue"],
            filters=[{"name": "JOB_NAME", "values": [job["jobName"]]}], maxResults=LIST_PAGE,
        ):
            container = summary.get("container") or {}
            if summary.get("jobId") == job["jobId"] and container.get("exitCode") is not None:
                return {**job, "container": {**(job.get("container") or {}), **container}}
        return job

    def _with_failed_dependency(self, job: dict[str, Any]) -> dict[str, Any]:
        """moto fails a job whose dependency failed without AWS's reason ("Dependent Job failed")."""
        ids = [str(d["jobId"]) for d in job.get("dependsOn") or [] if d.get("jobId")]
        failed = [i for i, dep in self.describe(ids).items() if dep.get("status") == "FAILED"] if ids else []
        return {**job, "statusReason": f"Dependent Job failed: {', '.join(failed)}"} if failed else job

    def _array_states(self, job: dict[str, Any], members: list[tuple[str, int | None]]) -> dict[str, Status]:
        parent = str(job["jobId"])
        self.is_array[parent] = True
        props = job["arrayProperties"]
        counts = {k: int(v) for k, v in (props.get("statusSummary") or {}).items()}
        ended = counts.get("SUCCEEDED", 0) + counts.get("FAILED", 0)
        # moto never marks a parent FAILED: the counts say when every child has ended
        final = job.get("status") in ("SUCCEEDED", "FAILED") or ended >= int(props["size"])
        view = self._arrays.setdefault(parent, _ArrayView())
        if counts.get("FAILED", 0) != view.failed_count:
            view.failed = {_child_index(c): c for c in self._children(parent, "FAILED")}
            view.failed_count = counts.get("FAILED", 0)
        running: set[int] | None = None
        if not final and counts.get("RUNNING") and sum(counts.get(s, 0) for s in st.WAITING):
            key = tuple(sorted(counts.items()))
            if key != view.running_key:
                view.running = {_child_index(c) for c in self._children(parent, "RUNNING")}
                view.running_key = key
            running = view.running
        reason = str(job.get("statusReason") or "")
        cancelled = reason.removeprefix("jobsub:").strip() if reason.startswith("jobsub:") else ""
        if not final and not cancelled and st.never_started(counts):
            stuck = self._stuck(parent, reason)
            cancelled = stuck.reason if stuck is not None else ""
        elif not st.never_started(counts):
            self._runnable_since.pop(parent, None)
        timeout_s = _timeout_s(job)

        def child_status(child: Mapping[str, Any]) -> Status:
            return st.job_status(child, timeout_s, lambda: self.image(job))

        return {
            backend_id: st.array_member(index, counts, final, view.failed, running, child_status, cancelled)
            for backend_id, index in members
        }

    def _children(self, parent: str, status: str) -> list[dict[str, Any]]:
        return list(self.api.pages(
            "batch", "ListJobs", "jobSummaryList", arrayJobId=parent, jobStatus=status, maxResults=LIST_PAGE,
        ))

    def _stuck(self, job_id: str, aws_reason: str) -> Status | None:
        """Terminate a job RUNNABLE (never started) for longer than its ``runnable_timeout_min``.

        Timed from when this process first saw it waiting: a job re-attached
        from elsewhere gets the whole limit again rather than being cut short.
        """
        limit = self._runnable_limit(job_id)
        now = time.monotonic()
        since = self._runnable_since.setdefault(job_id, now)
        if limit is None or now - since < limit * 60:
            return None
        why = f"RUNNABLE for over {limit:g} min (aws_batch_runnable_timeout_min), cancelled by jobsub"
        reason = f"{why}; AWS says: {aws_reason[:300]}" if aws_reason else f"{why}; AWS gives no reason"
        self.api.call("batch", "TerminateJob", jobId=job_id, reason=f"jobsub: {reason}"[:1000])
        logger.warning("AWS Batch job %s: %s", job_id, reason)
        return Status(JobState.CANCELLED, reason)

    def _runnable_limit(self, job_id: str) -> float | None:
        if job_id not in self.limits:  # a job of another process: its folder says
            key = lookup_id(self._storage(), job_id)
            meta = JobFolder(self._storage(), key).read_meta() if key else {}
            self.limits[job_id] = meta.get("parameters", {}).get("specific", {}).get("runnable_timeout_min")
        return self.limits[job_id]

    def _vanished(self, parent: str, members: list[tuple[str, int | None]]) -> dict[str, Status]:
        """A job DescribeJobs does not return (any more): its folder tells how it ended."""
        storage = self._storage()
        key = lookup_id(storage, parent)
        if key is None:
            why = f"AWS Batch does not know job {parent} and no folder in {self.root} names it"
            return {backend_id: Status(JobState.LOST, why) for backend_id, _ in members}
        folder = JobFolder(storage, key)
        sub = next((s for s in folder.read_meta().get("submissions", []) if s["id"] == parent), None)
        if sub is None or time.time() - float(sub.get("submitted_at", 0)) < self.lost_grace_s:
            return {backend_id: Status(JobState.PENDING, "not listed by AWS Batch yet") for backend_id, _ in members}
        answer = {}
        for backend_id, index in members:
            if folder.has_result(sub["offset"] + (index or 0), 0):
                answer[backend_id] = Status(
                    JobState.COMPLETED, f"AWS Batch no longer lists job {parent}; its result is in the folder",
                )
            else:
                answer[backend_id] = Status(
                    JobState.LOST,
                    f"AWS Batch no longer lists job {parent} (it forgets finished jobs after a while) and "
                    f"it left no result in {folder.url}",
                )
        return answer

    def image(self, job: Mapping[str, Any]) -> str:
        """The image of a job, to name it in errors (moto's descriptions leave it out)."""
        image = (job.get("container") or {}).get("image")
        arn = str(job.get("jobDefinition", ""))
        if not image and arn and arn not in self.images:
            found = self.api.call("batch", "DescribeJobDefinitions", jobDefinitions=[arn]).get("jobDefinitions", [])
            self.images[arn] = str(found[0].get("containerProperties", {}).get("image", "")) if found else ""
        return str(image or self.images.get(arn, ""))

    def aws_id(self, backend_id: str) -> str:
        """jobsub's ``<parent>_<i>`` as AWS's ``<parent>:<i>`` (a one-task "array" is a plain job)."""
        parent, sep, index = backend_id.partition("_")
        if not sep:
            return parent
        if parent not in self.is_array:
            job = self.describe([parent]).get(parent) or {}
            self.is_array[parent] = bool((job.get("arrayProperties") or {}).get("size"))
        return f"{parent}:{index}" if self.is_array[parent] else parent


def _timeout_s(job: Mapping[str, Any]) -> int | None:
    value = (job.get("timeout") or {}).get("attemptDurationSeconds")
    return int(value) if value else None


def _child_index(child: Mapping[str, Any]) -> int:
    index = (child.get("arrayProperties") or {}).get("index")
    return int(index) if index is not None else int(str(child["jobId"]).rpartition(":")[2])
