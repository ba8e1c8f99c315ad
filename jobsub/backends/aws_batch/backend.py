"""The AWS Batch backend: one SubmitJob per array, state at O(arrays) cost, folders on S3.

::

    submit ─> (the core shipped the code package to <root>/.code/<digest>.tar.gz: launch.code_package)
           ─> job definition jobsub-<hash> (DescribeJobDefinitions, else Register; once per shape)
           ─> SubmitJob, paced; lost answers are looked up by job name (the submission tag)
              before the call is repeated: never two jobs for one submission
    states ─> the kit's ArrayTracker (jobsub.cloud.arrays) over scheduler.py's DescribeJobs of
              parents and ListJobs of children; its rules: a job AWS forgot -> the folder decides,
              RUNNABLE past runnable_timeout_min -> terminated, CANCELLED
    cancel ─> TerminateJob (an array's id: the whole array)
    logs   ─> CloudWatch Logs stream of the task (when asked), else the folder's logs (jobsub.cloud.logs)
    debug  ─> the kit's attached run (jobsub.cloud.attached) on this machine's engine: here.py
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ...cloud.arrays import ArrayTracker, PendingTooLong
from ...cloud.attached import is_attached
from ...cloud.aws import AWSGateway
from ...cloud.container import container_command
from ...cloud.logs import provider_or_folder_logs
from ...errors import InvalidParameterError
from ...folder import JobFolder
from ...parameters import CommonParameters, Resolved
from ...states import Status
from ..base import Backend, Capabilities, Launch
from . import render
from .cloudwatch import log_location, read_stream
from .here import run_here
from .params import AWSBatchParameters
from .scheduler import BatchScheduler

__all__ = ["AWSBatchBackend"]

N_TO_N = "N_TO_N:"
"""Prefix of a pairwise dependency on an array (``waits_for_array``) among a submission's dependencies."""

logger = logging.getLogger("jobsub.aws_batch")


class AWSBatchBackend(Backend):
    """Runs tasks as AWS Batch jobs (arrays for ``map_array``), with job folders on S3.

    Args:
        root: the executor's folder, ``s3://bucket/prefix``.
        region: AWS region; None: boto3's default (AWS_DEFAULT_REGION, ~/.aws/config).
    """

    name = "aws_batch"
    Parameters = AWSBatchParameters
    task_env: ClassVar[Mapping[str, str]] = {
        # AWS sets the index; moto does not, but AWS_BATCH_JOB_ID is "<parent>:<index>" on both
        "index": "AWS_BATCH_JOB_ARRAY_INDEX|AWS_BATCH_JOB_ID",
        "job_id": "AWS_BATCH_JOB_ID",
        "attempt": "AWS_BATCH_JOB_ATTEMPT",
    }
    poll_interval_s = 5.0
    capabilities = Capabilities(
        ranks=False, checkpoint=False, local_folders=False, object_store_folders=True, one_task_per_job=True,
        env_shown=True,
    )
    max_native_dependencies = 20  # SubmitJob's limit on dependsOn
    auto_array_default = True  # separate submits within a second: one SubmitJob
    result_parameters = ("image", "job_definition", "python")  # in a cached call's key

    def __init__(self, root: str, region: str | None = None) -> None:
        super().__init__(root)
        self.region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
        self.api = AWSGateway(self.region)
        self._lock = threading.RLock()
        self._definitions: dict[str, str] = {}  # definition name -> ARN
        self.jobs = BatchScheduler(self.api)
        stuck = PendingTooLong(
            lambda: self.storage, self.jobs.label, "runnable_timeout_min", "aws_batch_runnable_timeout_min", "RUNNABLE",
        )
        self.tracker = ArrayTracker(self.jobs, lambda: self.storage, pending=stuck)

    def config(self) -> dict[str, Any]:
        return {"root": self.root, **({"region": self.region} if self.region else {})}

    def check(self) -> None:
        """boto3 importable and a region known; no call to AWS (the queue is not known yet)."""
        self.api.client("batch")

    def check_parameters(self, params: Resolved) -> None:
        spec = params.specific
        if not spec.job_queue and not spec.debug:
            raise InvalidParameterError("set the job queue: aws_batch_job_queue='name or ARN'")
        if not spec.image and not spec.job_definition:
            raise InvalidParameterError("set the image of the tasks (aws_batch_image='...') or aws_batch_job_definition")

    def max_array_size(self, params: Resolved) -> int:
        return render.MAX_ARRAY_SIZE

    # -- submission -------------------------------------------------------------------------
    def submit(self, launch: Launch, n_tasks: int, params: Resolved, folder: JobFolder, *, array: bool) -> str:
        common, spec = params.common, params.specific  # checked by check_parameters when submitted
        launch = render.task_launch(launch, array=array)  # its code package is in the bucket already
        if spec.debug:  # the same image, command and folder, on this machine's Docker engine
            return run_here(launch, container_command(launch, spec.python), n_tasks, spec.image, common, folder)
        request = render.submit_request(launch, n_tasks, common, spec, spec.job_definition or "")
        render.check_overrides_size(request)  # before anything is registered
        request["jobDefinition"] = spec.job_definition or self._definition(launch, common, spec)
        depends_on = self._depends_on(params.dependencies)
        if depends_on:
            request["dependsOn"] = depends_on
        queue, name = request["jobQueue"], request["jobName"]
        answer = self.api.call(
            "batch", "SubmitJob", what=f"SubmitJob {name} to queue {queue}", submitting=True,
            before_retry=lambda: self._found(queue, name), **request,
        )
        job_id = str(answer["jobId"])
        self.tracker.submitted(job_id, array=n_tasks > 1, pending_limit_min=spec.runnable_timeout_min)
        return job_id

    def waits_natively(self, upstream: Backend, job_id: str) -> bool:
        """``dependsOn`` for a plain job of the same region.  Not for a child of an array:
        depending on its array would fail this job when a sibling fails; jobsub holds it instead."""
        return (
            isinstance(upstream, AWSBatchBackend) and upstream.region == self.region
            and ":" not in self.aws_id(job_id)
        )

    def waits_for_array(self, upstream: Backend, job_ids: Sequence[str]) -> str | None:
        """``N_TO_N`` on an array of the same region and size whose children come in order:
        child i starts when child i of the other succeeded (a sibling's failure stops only its pair)."""
        if not isinstance(upstream, AWSBatchBackend) or upstream.region != self.region:
            return None
        parent = self.tracker.whole_array(job_ids)
        return f"{N_TO_N}{parent}" if parent else None

    def _depends_on(self, dependencies: Sequence[str]) -> list[dict[str, str]]:
        """``dependsOn`` for the jobs this submission waits on natively (``waits_natively``,
        ``waits_for_array``)."""
        pairwise = [{"jobId": d.removeprefix(N_TO_N), "type": "N_TO_N"} for d in dependencies if d.startswith(N_TO_N)]
        plain = sorted({self.aws_id(d) for d in dependencies if not d.startswith(N_TO_N)})
        return pairwise + [{"jobId": aws_id} for aws_id in plain]

    def _definition(self, launch: Launch, common: CommonParameters, spec: AWSBatchParameters) -> str:
        """The ARN of the definition of this shape, registered if no process did it before."""
        request = render.definition_request(launch, common, spec)
        name = request["jobDefinitionName"]
        with self._lock:
            if name in self._definitions:
                return self._definitions[name]
            found = self.api.call(
                "batch", "DescribeJobDefinitions", jobDefinitionName=name, status="ACTIVE",
            ).get("jobDefinitions", [])
            if found:
                arn = str(max(found, key=lambda d: int(d.get("revision", 0)))["jobDefinitionArn"])
            else:
                what = f"registering job definition {name} (image {spec.image!r})"
                arn = str(self.api.call("batch", "RegisterJobDefinition", what=what, submitting=True, **request)["jobDefinitionArn"])
                logger.info("registered AWS Batch job definition %s for image %s", arn, spec.image)
            self._definitions[name], self.jobs.images[arn] = arn, spec.image
            return arn

    def _found(self, queue: str, name: str) -> dict[str, str] | None:
        """Asked before SubmitJob is repeated: the job, if the lost answer had created it."""
        job_id = self.jobs.find(queue, name)
        return {"jobId": job_id} if job_id else None

    def find_submitted(self, launch: Launch, folder: JobFolder) -> str | None:
        name = render.job_name(folder.parameter("name", common=True), launch.tag)
        return self.jobs.find(folder.parameter("job_queue"), name)

    def aws_id(self, backend_id: str) -> str:
        """jobsub's ``<parent>_<i>`` as AWS's ``<parent>:<i>`` (a one-task "array" is a plain job)."""
        return self.tracker.native_id(backend_id, lambda parent, index: f"{parent}:{index}")

    # -- states ---------------------------------------------------------------------------------
    def states(self, backend_ids: Sequence[str]) -> dict[str, Status]:
        return self.tracker.states(backend_ids)

    # -- cancel and logs ------------------------------------------------------------------
    def cancel(self, backend_ids: Sequence[str]) -> None:
        self.tracker.cancel(backend_ids, lambda parent, index: self.api.call(
            "batch", "TerminateJob", jobId=parent if index is None else f"{parent}:{index}", reason=render.CANCEL_REASON,
        ))

    def logs(self, backend_id: str, folder: JobFolder, index: int, rank: int) -> tuple[str | None, str | None]:
        """The task's CloudWatch stream (stdout and stderr interleaved: both are it), else the folder's
        (the kit's log policy, ``jobsub.cloud.logs``)."""
        if is_attached(backend_id):
            return super().logs(backend_id, folder, index, rank)
        aws_id = self.aws_id(backend_id)
        described: list[Mapping[str, Any] | None] = [None]

        def ended() -> bool:  # DescribeJobs of the task (an array's child too)
            found = self.jobs.describe([aws_id]).get(aws_id)
            described[0] = job = found.native if found is not None else None
            return job is None or job.get("status") in ("SUCCEEDED", "FAILED")

        def read() -> str | None:
            where = log_location(described[0]) if described[0] else None
            return read_stream(self.api, *where) if where else None

        return provider_or_folder_logs(folder, index, rank, ended=ended, read=read)

