"""The array tracker's suite (tests/conformance/arrays.py) on the reference scheduler and on AWS Batch's.

AWS Batch's own ``Scheduler`` (jobsub.backends.aws_batch.scheduler) runs it
over a fake boto3 Batch client that answers from the script in AWS's shapes
(DescribeJobs with ``statusSummary``, ListJobs summaries, TerminateJob), so
its translation of AWS's answers is held to the same lifecycle as every other
backend's.  What is real: the tracker, the AWS gateway (pacing, retries of a
``ThrottlingException``, error mapping), botocore's exception classes.
"""

from __future__ import annotations

import collections
from typing import Any

import pytest

from jobsub.cloud.arrays import Scheduler
from jobsub.cloud.aws import AWSGateway
from jobsub.states import JobState
from tests.conformance.arrays import ArrayTrackerSuite, Script, ScriptClient, ScriptedJob, Throttled

pytest.importorskip("botocore", reason="the AWS variant needs the aws extra (pip install 'jobsub[aws]')")


class TestReferenceTracker(ArrayTrackerSuite):
    """The suite on ``FakeScheduler``: the tracker's own rules, in jobsub's terms."""


_NATIVE = {JobState.PENDING: "RUNNABLE", JobState.RUNNING: "RUNNING", JobState.COMPLETED: "SUCCEEDED", JobState.FAILED: "FAILED"}


class FakeBatchClient(ScriptClient):
    """AWS Batch's answers from the script, in the shapes its API reference documents."""

    def throttled(self, kind: str, exc: Throttled) -> Exception:
        from botocore.exceptions import ClientError

        error = {"Error": {"Code": "ThrottlingException", "Message": str(exc)}, "ResponseMetadata": {"HTTPStatusCode": 400}}
        return ClientError(error, kind)  # type: ignore[arg-type]

    def _task(self, job: ScriptedJob, index: int) -> dict[str, Any]:
        state = job.children[index]
        task: dict[str, Any] = {"status": _NATIVE[state], "statusReason": f"jobsub: {job.cancelled}" if job.cancelled else ""}
        if state is JobState.FAILED and not job.cancelled:
            task["container"] = {"exitCode": job.exit_codes.get(index, 1)}
        return task

    def _job(self, job_id: str, job: ScriptedJob) -> dict[str, Any]:
        reason = f"jobsub: {job.cancelled}" if job.cancelled else job.queued or ""
        if not job.array:
            return {**self._task(job, 0), "jobId": job_id, "statusReason": reason}
        summary = collections.Counter(_NATIVE[s] for s in job.children)
        ended = all(s.is_final for s in job.children)
        status = "FAILED" if job.cancelled else ("SUCCEEDED" if ended else "RUNNING" if summary["RUNNING"] else "PENDING")
        return {
            "jobId": job_id, "status": status, "statusReason": reason,
            "arrayProperties": {"size": len(job.children), "statusSummary": dict(summary)},
        }

    def describe_jobs(self, jobs: list[str]) -> dict[str, Any]:
        self._answer("describe")
        self.script.described.append(len(jobs))
        return {"jobs": [self._job(i, self.script.jobs[i]) for i in jobs if i in self.script.jobs]}

    def list_jobs(self, arrayJobId: str, jobStatus: str, maxResults: int) -> dict[str, Any]:
        self._answer("list")
        job = self.script.jobs[arrayJobId]
        return {"jobSummaryList": [
            {**self._task(job, i), "jobId": f"{arrayJobId}:{i}", "arrayProperties": {"index": i}}
            for i, s in enumerate(job.children) if _NATIVE[s] == jobStatus
        ]}

    def terminate_job(self, jobId: str, reason: str) -> dict[str, Any]:
        self._answer("cancel")
        self.script.cancel(jobId, reason.removeprefix("jobsub: "))
        return {}


class _ScriptedAWS(AWSGateway):
    first_delay_s = 0.01

    def __init__(self, script: Script) -> None:
        super().__init__("us-east-1")
        self.script = script

    def make_client(self, service: str) -> Any:
        return FakeBatchClient(self.script)


class TestAWSBatchTracker(ArrayTrackerSuite):
    """AWS Batch's answers read by its own ``BatchScheduler``."""

    @pytest.fixture
    def scheduler(self, script: Script) -> Scheduler:
        from jobsub.backends.aws_batch.scheduler import BatchScheduler

        return BatchScheduler(_ScriptedAWS(script))
