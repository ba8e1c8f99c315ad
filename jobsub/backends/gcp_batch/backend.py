"""The GCP Batch backend: one CreateJob per array, state at O(arrays) cost, folders on GCS.

::

    submit ─> (the core ships the code package to <root>/.code/, once per digest)
           ─> CreateJob projects/P/locations/L/jobs/<name>-<tag>: one task group of N tasks
              (render.job_request); its id is the submission's, so a retry after a lost answer
              gets 409 ALREADY_EXISTS and adopts the job (GetJob): never two jobs
    states ─> one GetJob per array (task-group counts by state); failed tasks listed
              (ListTasks State=FAILED) only when the failed count moved, to explain them
           ─> a job Batch no longer returns: its folder decides (result -> COMPLETED, none -> LOST)
           ─> QUEUED past queued_timeout_min: cancelled, reported CANCELLED with Batch's status event
    cancel ─> CancelJob of whole jobs; a task cancelled alone (Batch cannot) is left to its
              worker, which finds the cancel in the folder: not started, or its result not published
    logs   ─> Cloud Logging (batch_task_logs, by job uid and task), else the folder's

Ids are ``P.L.J`` for the Batch job ``projects/P/locations/L/jobs/J`` (ids hold no ``/``),
task ``i`` ``<id>_<i>``.
Successes are not polled for: the worker writes each result to the folder
before its container ends, and ``Job`` reads results first.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from google.cloud import batch_v1

from ...cloud.arrays import ArrayTracker, PendingTooLong, split_id
from ...cloud.attached import attached_id, attached_states, is_attached
from ...cloud.container import container_command
from ...cloud.google import GoogleGateway
from ...cloud.logs import LOG_WAIT_S, provider_or_folder_logs
from ...errors import InvalidParameterError, SubmissionError
from ...folder import JobFolder
from ...parameters import Resolved
from ...states import Status
from ...storage import Storage, open_storage
from ..base import Backend, Capabilities, Launch
from . import render
from .here import project_here, run_here
from .params import GCPBatchParameters
from .scheduler import BatchScheduler

__all__ = ["GCPBatchBackend"]

logger = logging.getLogger("jobsub.gcp_batch")

class GCPBatchBackend(Backend):
    """Runs tasks as GCP Batch jobs (a task group of N tasks for ``map_array``), with job folders on GCS.

    Args:
        root: the executor's folder, ``gs://bucket/prefix``.
    """

    name = "gcp_batch"
    Parameters = GCPBatchParameters
    task_env: ClassVar[Mapping[str, str]] = {"index": "BATCH_TASK_INDEX"}
    poll_interval_s = 5.0
    capabilities = Capabilities(
        ranks=False, checkpoint=False, local_folders=False, object_store_folders=True, env_shown=True,
        one_task_per_job=True,  # a task is one container running one worker (no multi-node task groups)
    )
    auto_array_default = True  # separate submits within a second: one CreateJob
    result_parameters = ("image", "python")

    log_wait_s = LOG_WAIT_S

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.api = GoogleGateway()
        self.jobs = BatchScheduler(self.api)
        stuck = PendingTooLong(
            lambda: self.storage, self.jobs.label, "queued_timeout_min", "gcp_batch_queued_timeout_min", "QUEUED",
        )
        self.tracker = ArrayTracker(self.jobs, lambda: self.storage, pending=stuck)

    def max_array_size(self, params: Resolved) -> int:
        return render.MAX_TASKS

    @functools.cached_property
    def storage(self) -> Storage:
        """The executor's folder store (opened on first use)."""
        return open_storage(self.root)

    # -- submission -------------------------------------------------------------------------
    def submit(self, launch: Launch, n_tasks: int, params: Resolved, folder: JobFolder, *, array: bool) -> str:
        common, spec = params.common, params.specific
        if not folder.url.startswith("gs://"):
            raise InvalidParameterError(
                f"GCP Batch tasks read their job folder from Cloud Storage: give a gs:// folder, not {folder.url}"
            )
        launch = render.task_launch(launch)
        if spec.debug:  # the same image, command and folder, on this machine's Docker engine
            here = render.named(launch, attached_id(launch), array=n_tasks > 1)
            render.job_request(here, n_tasks, common, spec)  # bad input is refused as it would be
            return run_here(here, container_command(here, spec.python), n_tasks, spec.image, spec.project, common, folder)
        parent = f"projects/{_project(spec)}/locations/{_location(spec)}"
        job_id = render.job_id(common.name, launch.tag)
        name = f"{parent}/jobs/{job_id}"
        launch = render.named(launch, render.backend_id(name), array=n_tasks > 1)
        body = render.job_request(launch, n_tasks, common, spec)  # bad input is refused here, before any call
        request = batch_v1.CreateJobRequest(
            parent=parent, job_id=job_id, job=batch_v1.Job.from_json(json.dumps(body)),
            request_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{folder.url}#{launch.tag}")),
        )
        ours = render.backend_id(name)
        try:
            self.api.batch(
                "CreateJob", request=request, what=f"CreateJob {name} (image {spec.image!r})", submitting=True,
                before_retry=lambda: self._adopt(ours),
            )
        except SubmissionError as exc:  # 409: an earlier attempt (its answer lost) made it
            from google.api_core import exceptions as api_exceptions

            if not isinstance(exc.__cause__, api_exceptions.Conflict) or self._adopt(ours) is None:
                raise
        self.tracker.submitted(ours, array=n_tasks > 1, pending_limit_min=spec.queued_timeout_min)
        return ours

    def _adopt(self, job_id: str) -> str | None:
        """Asked before CreateJob is repeated: the job, if the lost answer had created it."""
        if self.jobs.get(job_id) is None:
            return None
        logger.warning("CreateJob %s went through although its answer was lost: adopting the job", job_id)
        return job_id

    def find_submitted(self, launch: Launch, folder: JobFolder) -> str | None:
        spec = GCPBatchParameters(
            project=folder.parameter("project") or "", region=folder.parameter("region") or "",
            location=folder.parameter("location") or "",
        )
        job_id = render.job_id(folder.parameter("name", common=True), render.task_launch(launch).tag)
        found = render.backend_id(f"projects/{_project(spec)}/locations/{_location(spec)}/jobs/{job_id}")
        return found if self.jobs.get(found) is not None else None

    # -- states, cancel, logs -----------------------------------------------------------------------
    def states(self, backend_ids: Sequence[str]) -> dict[str, Status]:
        here = [i for i in backend_ids if is_attached(i)]
        answer = self.tracker.states([i for i in backend_ids if not is_attached(i)])
        return {**answer, **attached_states(self.storage, here)} if here else answer

    def cancel(self, backend_ids: Sequence[str]) -> None:
        """CancelJob of each job named whole (a plain job, an array by its own id, or an array all
        of whose tasks are cancelled); a task of a many-task job cancelled alone is left to its worker.

        Batch cancels whole jobs only.  ``Job.cancel`` recorded the cancel in the folder: the
        task's worker does not start it, or does not publish its result if it already runs (its
        VM keeps computing until the function returns), and the task reads CANCELLED while its
        siblings run on (``jobsub.cloud.arrays.CancelledAlone``).
        """

        def end(parent: str, index: int | None) -> None:
            described = self.tracker.describe([parent]).get(parent)
            if described is None or described.ended:
                return
            self.jobs.reasons.setdefault(parent, "cancelled by the user")
            self.api.batch("CancelJob", name=render.job_name(parent), what=f"CancelJob {parent}").result()

        self.tracker.cancel(backend_ids, end, whole_only=True)

    def logs(self, backend_id: str, folder: JobFolder, index: int, rank: int) -> tuple[str | None, str | None]:
        """The task's Cloud Logging entries (stdout and stderr interleaved: both are them), else the folder's."""
        if is_attached(backend_id):
            return super().logs(backend_id, folder, index, rank)
        parent, child = split_id(backend_id)
        job: list[Any] = [None]

        def ended() -> bool:
            job[0] = found = self.jobs.get(parent)
            return found is None or found.status.state.name in ("SUCCEEDED", "FAILED", "CANCELLED")

        def read() -> str | None:
            if job[0] is None:
                return None
            project = render.job_name(parent).split("/")[1]
            task = f"task/{job[0].uid}-group0-{child or 0}/"
            query = (
                f'logName="projects/{project}/logs/batch_task_logs" AND labels.job_uid="{job[0].uid}" '
                f'AND labels.task_id:"{task}"'
            )
            logging_client = self.api.client(f"logging:{project}")

            def once() -> list[str]:
                entries = logging_client.list_entries(
                    resource_names=[f"projects/{project}"], filter_=query, order_by="timestamp asc", page_size=1000,
                )
                return [str(entry.payload) for entry in entries]

            lines: list[str] = self.api.run("ListLogEntries", once, what=f"reading the logs of {backend_id}")
            return "".join(line + "\n" for line in lines) if lines else None

        return provider_or_folder_logs(folder, index, rank, ended=ended, read=read, wait_s=self.log_wait_s)


def _project(spec: GCPBatchParameters) -> str:
    found = project_here(spec.project)
    if not found:
        raise InvalidParameterError("set the Google Cloud project: gcp_batch_project='my-project' (or GOOGLE_CLOUD_PROJECT)")
    return found


def _location(spec: GCPBatchParameters) -> str:
    if not (spec.region or spec.location):
        raise InvalidParameterError("set where the jobs run: gcp_batch_region='us-central1'")
    return spec.region or spec.location

