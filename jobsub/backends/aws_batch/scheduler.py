"""What AWS Batch answers the array tracker (jobsub.cloud.arrays): its calls, and moto's gaps filled.

::

    describe(parents)        DescribeJobs, ≤ 100 ids a call      -> status.parent(job)
    children(array, states)  ListJobs arrayJobId=... jobStatus=FAILED / RUNNING, 1,000 a page
    status(job)              status.job_status (the failure table); a FAILED plain job without
                             exit code: ListJobs by name has it (moto), or its failed dependency
    cancel(job, reason)      TerminateJob "jobsub: <reason>" (status.failure reads it back)
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from ...cloud.arrays import Parent
from ...cloud.aws import AWSGateway
from ...states import JobState, Status
from . import status as st

__all__ = ["LIST_PAGE", "BatchScheduler"]

LIST_PAGE = 1000
"""ListJobs page size (AWS's maximum)."""


class BatchScheduler:
    """AWS Batch's answers about its jobs, through the backend's gateway."""

    label = "AWS Batch"
    describe_max = 100
    list_page = LIST_PAGE
    """AWS's limit of ids per DescribeJobs call (moto does not enforce it; the tracker does)."""

    def __init__(self, api: AWSGateway) -> None:
        self.api = api
        self.images: dict[str, str] = {}
        """Job definition ARN -> image, to name it in errors."""

    def describe(self, parents: Sequence[str]) -> dict[str, Parent]:
        return {str(j["jobId"]): st.parent(j) for j in self.api.call("batch", "DescribeJobs", jobs=list(parents)).get("jobs", [])}

    def children(self, parent: Parent, states: Collection[JobState]) -> dict[int, Any]:
        """One ListJobs listing per state (the tracker asks for FAILED and RUNNING: AWS's names too)."""
        return {
            _child_index(child): child
            for state in states
            for child in self.api.pages(
                "batch", "ListJobs", "jobSummaryList", arrayJobId=parent.id, jobStatus=state.value, maxResults=LIST_PAGE,
            )
        }

    def status(self, native: Any, parent: Parent) -> Status:
        job = native
        if native is parent.native and job.get("status") == "FAILED" and (job.get("container") or {}).get("exitCode") is None:
            job = self._with_exit_code(job)
            if (job.get("container") or {}).get("exitCode") is None and not job.get("statusReason"):
                job = self._with_failed_dependency(job)
        timeout = (parent.native.get("timeout") or {}).get("attemptDurationSeconds")
        return st.job_status(job, int(timeout) if timeout else None, lambda: self.image(parent.native))

    def cancel(self, parent: Parent, reason: str) -> None:
        self.api.call("batch", "TerminateJob", jobId=parent.id, reason=f"jobsub: {reason}"[:1000])

    def find(self, queue: str, name: str) -> str | None:
        """The newest job (not array child) named ``name`` in ``queue`` (ListJobs' JOB_NAME filter)."""
        jobs = [j for j in self._named(queue, name) if ":" not in str(j.get("jobId"))]  # moto lists children too
        return str(max(jobs, key=lambda j: j.get("createdAt", 0))["jobId"]) if jobs else None

    def _named(self, queue: str, name: str) -> list[dict[str, Any]]:
        return [
            j for j in self.api.pages(
                "batch", "ListJobs", "jobSummaryList", jobQueue=queue,
                filters=[{"name": "JOB_NAME", "values": [name]}], maxResults=LIST_PAGE,
            ) if j.get("jobName") == name
        ]

    def _with_exit_code(self, job: Mapping[str, Any]) -> Mapping[str, Any]:
        """moto's DescribeJobs leaves out the exit code that its ListJobs has: merge it in."""
        for summary in self._named(job["jobQueue"], job["jobName"]):
            container = summary.get("container") or {}
            if summary.get("jobId") == job["jobId"] and container.get("exitCode") is not None:
                return {**job, "container": {**(job.get("container") or {}), **container}}
        return job

    def _with_failed_dependency(self, job: Mapping[str, Any]) -> Mapping[str, Any]:
        """moto fails a job whose dependency failed without AWS's reason ("Dependent Job failed")."""
        ids = [str(d["jobId"]) for d in job.get("dependsOn") or [] if d.get("jobId")]
        failed = [i for i, dep in self.describe(ids).items() if dep.native.get("status") == "FAILED"] if ids else []
        return {**job, "statusReason": f"Dependent Job failed: {', '.join(failed)}"} if failed else job

    def image(self, job: Mapping[str, Any]) -> str:
        """The image of a job, to name it in errors (moto's descriptions leave it out)."""
        image = (job.get("container") or {}).get("image")
        arn = str(job.get("jobDefinition", ""))
        if not image and arn and arn not in self.images:
            found = self.api.call("batch", "DescribeJobDefinitions", jobDefinitions=[arn]).get("jobDefinitions", [])
            self.images[arn] = str(found[0].get("containerProperties", {}).get("image", "")) if found else ""
        return str(image or self.images.get(arn, ""))


def _child_index(child: Mapping[str, Any]) -> int:
    index = (child.get("arrayProperties") or {}).get("index")
    return int(index) if index is not None else int(str(child["jobId"]).rpartition(":")[2])
