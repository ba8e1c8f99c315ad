"""The AWS Batch backend: one SubmitJob per array, state at O(arrays) cost, folders on S3.

::

    submit ─> code package to <root>/.code/<digest>.tar.gz (once per digest)
           ─> job definition jobsub-<hash> (DescribeJobDefinitions, else Register; once per shape)
           ─> SubmitJob, paced; lost answers are looked up by job name (the submission tag)
              before the call is repeated: never two jobs for one submission
    states ─> DescribeJobs on the PARENTS only (≤ 100 ids a call): a plain job's status, an
              array's statusSummary; children are listed only to explain failures (ListJobs
              FAILED) or to tell running from waiting ones (ListJobs RUNNING, when both exist)
           ─> a job AWS no longer returns: its folder decides (result -> COMPLETED, none -> LOST)
           ─> RUNNABLE for longer than runnable_timeout_min: terminated, reported CANCELLED
    cancel ─> TerminateJob (an array's id: the whole array)
    logs   ─> CloudWatch Logs stream of the task (when asked), else the folder's logs

Successes are not polled for: the worker writes the task's result to the
folder before its container exits, and ``Job`` reads results first.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...errors import InvalidParameterError
from ...folder import JobFolder, lookup_id
from ...packaging import build_code_package
from ...parameters import CommonParameters, Resolved
from ...states import JobState, Status
from ...storage import Storage, open_storage
from ..base import Backend, Capabilities, Launch
from . import render
from . import status as st
from .api import Api
from .cloudwatch import log_location, read_stream
from .params import AWSBatchParameters

__all__ = ["AWSBatchBackend"]

logger = logging.getLogger("jobsub.aws_batch")

DESCRIBE_MAX_IDS = 100
"""AWS's limit of ids per DescribeJobs call (moto does not enforce it; this module does)."""
LIST_PAGE = 1000
"""ListJobs page size (AWS's maximum)."""


@dataclass
class _ArrayView:
    """What was last listed of one array's children (re-listed only when the counts change)."""

    failed_count: int = -1
    failed: dict[int, Mapping[str, Any]] = field(default_factory=dict)
    running_key: tuple[tuple[str, int], ...] = ()
    running: set[int] = field(default_factory=set)


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
    result_check_s = 0.5  # a result check is an S3 HEAD: cheap, not free
    capabilities = Capabilities(
        ranks=False, checkpoint=False, local_folders=False, object_store_folders=True,
    )
    lost_grace_s = 120.0
    """A job DescribeJobs does not return is PENDING this long after its submission (AWS's
    listings are eventually consistent), then judged by its folder."""

    def __init__(self, root: str, region: str | None = None) -> None:
        super().__init__(root)
        self.region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
        self.api = Api(self.region)
        self._lock = threading.RLock()
        self._storage: Storage | None = None
        self._definitions: dict[str, str] = {}  # definition name -> ARN
        self._images: dict[str, str] = {}  # definition ARN -> image
        self._code: set[str] = set()  # code package URLs known to be uploaded
        self._arrays: dict[str, _ArrayView] = {}
        self._is_array: dict[str, bool] = {}
        self._limits: dict[str, float | None] = {}  # parent id -> runnable_timeout_min
        self._runnable_since: dict[str, float] = {}

    def config(self) -> dict[str, Any]:
        return {"root": self.root, **({"region": self.region} if self.region else {})}

    def check(self) -> None:
        """boto3 importable and a region known; no call to AWS (the queue is not known yet)."""
        self.api.client("batch")

    def max_array_size(self, params: Resolved) -> int:
        return render.MAX_ARRAY_SIZE

    @property
    def storage(self) -> Storage:
        with self._lock:
            if self._storage is None:
                self._storage = open_storage(self.root)
            return self._storage

    # -- submission -------------------------------------------------------------------------
    def submit(self, launch: Launch, n_tasks: int, params: Resolved, folder: JobFolder, *, array: bool) -> str:
        common, spec = params.common, params.specific
        _validate(common, spec, folder)
        package = build_code_package(
            spec.code_root or os.getcwd(), spec.code_includes, spec.code_excludes, max_mb=spec.code_max_mb,
        ) if spec.package_code else None
        code_key = f".code/{package.name}.tar.gz" if package else ""
        code = (f"{folder.storage.url.rstrip('/')}/{code_key}", f"/tmp/jobsub-code/{package.name}") if package else None
        request = render.submit_request(launch, n_tasks, common, spec, spec.job_definition or "", code)
        render.check_overrides_size(request)  # before anything is uploaded or registered
        if package is not None and code is not None and code[0] not in self._code:
            if not folder.storage.exists(code_key):
                folder.storage.write_bytes(code_key, package.path.read_bytes())
            self._code.add(code[0])
        request["jobDefinition"] = spec.job_definition or self._definition(launch, common, spec)
        if params.dependencies:
            request["dependsOn"] = [{"jobId": self._aws_id(d)} for d in params.dependencies]
        queue, name = request["jobQueue"], request["jobName"]
        answer = self.api.call(
            "batch", "SubmitJob", what=f"SubmitJob {name} to queue {queue}", submitting=True,
            before_retry=lambda: self._found(queue, name), **request,
        )
        job_id = str(answer["jobId"])
        with self._lock:
            self._is_array[job_id] = n_tasks > 1
            self._limits[job_id] = spec.runnable_timeout_min
        return job_id

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
            self._definitions[name], self._images[arn] = arn, spec.image
            return arn

    def _found(self, queue: str, name: str) -> dict[str, str] | None:
        """Asked before SubmitJob is repeated: the job, if the lost answer had created it."""
        job_id = self._find(queue, name)
        if job_id is not None:
            logger.warning("SubmitJob %s went through although its answer was lost: job %s", name, job_id)
        return {"jobId": job_id} if job_id else None

    def _find(self, queue: str, name: str) -> str | None:
        """The newest job (not array child) named ``name`` in ``queue`` (ListJobs' JOB_NAME filter)."""
        jobs = [
            j for j in self.api.pages(
                "batch", "ListJobs", "jobSummaryList", jobQueue=queue,
                filters=[{"name": "JOB_NAME", "values": [name]}], maxResults=LIST_PAGE,
            )
            if j.get("jobName") == name and ":" not in str(j.get("jobId"))  # moto lists children too
        ]
        return str(max(jobs, key=lambda j: j.get("createdAt", 0))["jobId"]) if jobs else None

    def find_submitted(self, launch: Launch, folder: JobFolder) -> str | None:
        parameters = folder.read_meta()["parameters"]
        name = render.job_name(parameters["common"]["name"], launch.tag)
        return self._find(parameters["specific"]["job_queue"], name)

    # -- states ---------------------------------------------------------------------------------
    def states(self, backend_ids: Sequence[str]) -> dict[str, Status]:
        groups: dict[str, list[tuple[str, int | None]]] = {}
        for backend_id in backend_ids:
            parent, sep, index = backend_id.partition("_")
            groups.setdefault(parent, []).append((backend_id, int(index) if sep else None))
        described = self._describe(list(groups))
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

    def _describe(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(job_ids), DESCRIBE_MAX_IDS):
            chunk = job_ids[start : start + DESCRIBE_MAX_IDS]
            for job in self.api.call("batch", "DescribeJobs", jobs=chunk).get("jobs", []):
                found[str(job["jobId"])] = job
        return found

    def _plain_status(self, job: dict[str, Any]) -> Status:
        job_id = str(job["jobId"])
        self._is_array[job_id] = False
        if job.get("status") == "FAILED" and (job.get("container") or {}).get("exitCode") is None:
            job = self._with_exit_code(job)
        if job.get("status") == "RUNNABLE":
            stuck = self._stuck(job_id, str(job.get("statusReason") or ""))
            if stuck is not None:
                return stuck
        else:
            self._runnable_since.pop(job_id, None)
        return st.job_status(job, _timeout_s(job), lambda: self._image(job))

    def _with_exit_code(self, job: dict[str, Any]) -> dict[str, Any]:
        """moto's DescribeJobs leaves out the exit code that its ListJobs has: merge it in."""
        for summary in self.api.pages(
            "batch", "ListJobs", "jobSummaryList", jobQueue=job["jobQueue"],
            filters=[{"name": "JOB_NAME", "values": [job["jobName"]]}], maxResults=LIST_PAGE,
        ):
            if summary.get("jobId") == job["jobId"] and (summary.get("container") or {}).get("exitCode") is not None:
                return {**job, "container": {**(job.get("container") or {}), **summary["container"]}}
        return job

    def _array_states(self, job: dict[str, Any], members: list[tuple[str, int | None]]) -> dict[str, Status]:
        parent = str(job["jobId"])
        self._is_array[parent] = True
        props = job["arrayProperties"]
        counts: dict[str, int] = {k: int(v) for k, v in (props.get("statusSummary") or {}).items()}
        # moto never marks a parent FAILED: the counts say when every child has ended
        final = job.get("status") in ("SUCCEEDED", "FAILED") or counts.get("SUCCEEDED", 0) + counts.get("FAILED", 0) >= int(props["size"])
        view = self._arrays.setdefault(parent, _ArrayView())
        if counts.get("FAILED", 0) != view.failed_count:
            view.failed = {_child_index(c): c for c in self._children(parent, "FAILED")}
            view.failed_count = counts.get("FAILED", 0)
        running: set[int] | None = None
        waiting = sum(counts.get(s, 0) for s in st.WAITING)
        if not final and counts.get("RUNNING") and waiting:
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
        elif st.never_started(counts) is False:
            self._runnable_since.pop(parent, None)
        timeout_s = _timeout_s(job)
        return {
            backend_id: st.array_member(
                index, counts, final, view.failed, running,
                lambda child: st.job_status(child, timeout_s, lambda: self._image(job)), cancelled,
            )
            for backend_id, index in members
        }

    def _children(self, parent: str, status: str) -> list[dict[str, Any]]:
        return list(self.api.pages(
            "batch", "ListJobs", "jobSummaryList", arrayJobId=parent, jobStatus=status, maxResults=LIST_PAGE,
        ))

    def _stuck(self, job_id: str, aws_reason: str) -> Status | None:
        """Terminate a job RUNNABLE (never started) for longer than its ``runnable_timeout_min``."""
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
        with self._lock:
            if job_id not in self._limits:  # a job of another process: its folder says
                meta = self._meta(job_id)
                self._limits[job_id] = (meta or {}).get("parameters", {}).get("specific", {}).get("runnable_timeout_min")
            return self._limits[job_id]

    def _meta(self, job_id: str) -> dict[str, Any] | None:
        key = lookup_id(self.storage, job_id)
        return None if key is None else JobFolder(self.storage, key).read_meta()

    def _vanished(self, parent: str, members: list[tuple[str, int | None]]) -> dict[str, Status]:
        """A job DescribeJobs does not know (any more): its folder tells how it ended."""
        key = lookup_id(self.storage, parent)
        if key is None:
            why = f"AWS Batch does not know job {parent} and no folder in {self.root} names it"
            return {backend_id: Status(JobState.LOST, why) for backend_id, _ in members}
        folder = JobFolder(self.storage, key)
        sub = next((s for s in folder.read_meta().get("submissions", []) if s["id"] == parent), None)
        if sub is None or time.time() - float(sub.get("submitted_at", 0)) < self.lost_grace_s:
            return {backend_id: Status(JobState.PENDING, "not listed by AWS Batch yet") for backend_id, _ in members}
        answer = {}
        for backend_id, index in members:
            if folder.has_result(sub["offset"] + (index or 0), 0):
                answer[backend_id] = Status(JobState.COMPLETED, f"AWS Batch no longer lists job {parent}; its result is in the folder")
            else:
                answer[backend_id] = Status(
                    JobState.LOST,
                    f"AWS Batch no longer lists job {parent} (it forgets finished jobs after a while) and "
                    f"it left no result in {folder.url}",
                )
        return answer

    def _image(self, job: Mapping[str, Any]) -> str:
        """The image of a job, to name it in errors (moto's descriptions leave it out)."""
        image = (job.get("container") or {}).get("image")
        arn = str(job.get("jobDefinition", ""))
        if not image and arn and arn not in self._images:
            found = self.api.call("batch", "DescribeJobDefinitions", jobDefinitions=[arn]).get("jobDefinitions", [])
            self._images[arn] = str(found[0].get("containerProperties", {}).get("image", "")) if found else ""
        return str(image or self._images.get(arn, ""))

    # -- cancel and logs ------------------------------------------------------------------
    def cancel(self, backend_ids: Sequence[str]) -> None:
        for backend_id in backend_ids:
            self.api.call("batch", "TerminateJob", jobId=self._aws_id(backend_id), reason=render.CANCEL_REASON)

    def logs(self, backend_id: str, folder: JobFolder, index: int, rank: int) -> tuple[str | None, str | None]:
        """The task's CloudWatch stream (stdout and stderr interleaved: both are it), else the folder's."""
        job = self._describe([self._aws_id(backend_id)]).get(self._aws_id(backend_id))
        where = log_location(job) if job else None
        text = read_stream(self.api, *where) if where else None
        if text is None:
            return super().logs(backend_id, folder, index, rank)
        return text, text

    def _aws_id(self, backend_id: str) -> str:
        """jobsub's ``<parent>_<i>`` as AWS's ``<parent>:<i>`` (a one-task "array" is a plain job)."""
        parent, sep, index = backend_id.partition("_")
        if not sep:
            return parent
        if parent not in self._is_array:
            job = self._describe([parent]).get(parent) or {}
            self._is_array[parent] = bool((job.get("arrayProperties") or {}).get("size"))
        return f"{parent}:{index}" if self._is_array[parent] else parent


def _validate(common: CommonParameters, spec: AWSBatchParameters, folder: JobFolder) -> None:
    if folder.path is not None:
        raise InvalidParameterError(
            f"AWS Batch tasks cannot see {folder.path}: give the executor an s3:// folder (s3://bucket/prefix/%j)"
        )
    if not spec.job_queue:
        raise InvalidParameterError("set the job queue: aws_batch_job_queue='name or ARN'")
    if not spec.image and not spec.job_definition:
        raise InvalidParameterError("set the image of the tasks (aws_batch_image='...') or aws_batch_job_definition")
    if common.nodes > 1 or common.tasks_per_node > 1:
        raise InvalidParameterError("the aws_batch backend runs one task per job: use nodes=1 and tasks_per_node=1")


def _timeout_s(job: Mapping[str, Any]) -> int | None:
    value = (job.get("timeout") or {}).get("attemptDurationSeconds")
    return int(value) if value else None


def _child_index(child: Mapping[str, Any]) -> int:
    index = (child.get("arrayProperties") or {}).get("index")
    return int(index) if index is not None else int(str(child["jobId"]).rpartition(":")[2])
