"""What GCP Batch answers the array tracker (jobsub.cloud.arrays), and its failure table.

::

    describe(parents)        one GetJob per parent: state, task-group counts by state name
    children(job, states)    ListTasks filtered (State=FAILED, UNEXECUTED, RUNNING), 1,000 a page:
                             only when the counts moved (to explain failures)
    status(task or job)      the failure table below, with Batch's status event as the reason
    cancel(job, reason)      CancelJob (Batch keeps no reason: this process remembers it)

Batch's reserved exit codes (``TaskExecution.exit_code``, in the FAILED task's status event)::

    50001 its Spot VM was preempted               -> PREEMPTED (after the last of spot_retries)
    50005 it ran past maxRunDuration (timeout_min) -> TIMEOUT
    50000 Batch failed it, for none of its
          reserved reasons                        -> FAILED
    50002 a timeout in Batch's backend: its VM no
          longer received updates                 -> NODE_FAIL
    50003 its VM rebooted during the task         -> NODE_FAIL
    50006 its VM was recreated during the task    -> NODE_FAIL
    50004 the task reached Batch's unresponsive
          limit and could not be cancelled        -> FAILED (its code, or its VM: Batch does not say)
    137 with a memory request                     -> OUT_OF_MEMORY;  74/75/76: the worker's (jobsub.backends._exits)

Every reason carries Batch's own status event text.  Where each code is confirmed:

- 50000: Google's API reference, ``TaskExecution.exitCode``
  (cloud.google.com/batch/docs/reference/rest/v1/StatusEvent#TaskExecution): 50000 when a task
  failed for none of the reserved reasons, which are listed at
  cloud.google.com/batch/docs/troubleshooting#reserved-exit-codes.
- 50005: Google's "Limit run times for tasks and runnables using timeouts"
  (cloud.google.com/batch/docs/set-timeouts): exceeding a task's ``maxRunDuration`` (or a
  runnable's ``timeout``) ends it with exit code 50005.
- 50001: checked against Google's reserved-exit-code table when the backend was written (issue
  27); in this round only Cromwell's table (below) and Google's "Automate task retries"
  (cloud.google.com/batch/docs/automate-task-retries: Spot preemption is a failure that
  retries fix, by exit code) were readable.
- 50002, 50003, 50004, 50006: NOT confirmed from Google's own text (the troubleshooting page
  was not readable from here).  Their meanings above are those of Cromwell's GCP Batch
  backend (``GcpBatchExitCode``, citing that page) and of the status events it parses
  ("... due to VM is recreated during task execution with exit code 50006").  They are
  mapped conservatively: NODE_FAIL only where the VM itself is named, FAILED for 50004,
  and always with Batch's event text as the reason, which is what the user acts on.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from ...cloud.arrays import Parent
from ...cloud.google import GoogleGateway
from ...states import JobState, Status
from .._exits import killed_for_memory, worker_exit
from .render import job_name

__all__ = ["BatchScheduler", "LIST_PAGE"]

LIST_PAGE = 1000
"""ListTasks page size."""

_RESERVED: dict[int, tuple[JobState, str]] = {
    50001: (JobState.PREEMPTED, "its Spot VM was preempted (Batch exit code 50001)"),
    50005: (JobState.TIMEOUT, "it ran past its maximum run duration (timeout_min; Batch exit code 50005)"),
    50000: (JobState.FAILED, "Batch failed it (exit code 50000)"),
    # meanings not confirmed from Google's own text (see the module docstring): Batch's event says
    50002: (JobState.NODE_FAIL, "its VM stopped receiving updates from Batch (exit code 50002)"),
    50003: (JobState.NODE_FAIL, "its VM rebooted during the task (Batch exit code 50003)"),
    50006: (JobState.NODE_FAIL, "its VM was recreated during the task (Batch exit code 50006)"),
    50004: (JobState.FAILED, "it became unresponsive and Batch could not cancel it (exit code 50004)"),
}
# task-group counts (task state names) -> what the tracker counts
_COUNTED = {
    "PENDING": JobState.PENDING, "ASSIGNED": JobState.RUNNING, "RUNNING": JobState.RUNNING,
    "SUCCEEDED": JobState.COMPLETED, "FAILED": JobState.FAILED, "UNEXECUTED": JobState.FAILED,
}
_FINAL_JOB = ("SUCCEEDED", "FAILED", "CANCELLED")
_CANCELLING = ("CANCELLATION_IN_PROGRESS", "CANCELLED", "DELETION_IN_PROGRESS")


class BatchScheduler:
    """GCP Batch's answers about its jobs (parents are jobsub's ids, ``render.backend_id``), through the Google gateway."""

    label = "GCP Batch"
    describe_max = 1  # GetJob takes one name
    list_page = LIST_PAGE

    def __init__(self, api: GoogleGateway) -> None:
        self.api = api
        self.reasons: dict[str, str] = {}
        """Job id -> why this process cancelled it (Batch keeps none)."""

    def get(self, job_id: str) -> Any:
        """GetJob of jobsub's id ``job_id``, None for a job Batch does not know (deleted, or never made)."""
        from google.api_core import exceptions as api_exceptions

        name = job_name(job_id)

        def once() -> Any:
            try:
                return self.api.client("batch").get_job(name=name, retry=None)
            except api_exceptions.NotFound:
                return None

        return self.api.run("GetJob", once, what=f"GetJob {name}")

    def describe(self, parents: Sequence[str]) -> dict[str, Parent]:
        found = {}
        for name in parents:
            job = self.get(name)
            if job is not None:
                found[name] = self.parent(name, job)
        return found

    def parent(self, name: str, job: Any) -> Parent:
        state = type(job.status.state)(job.status.state).name
        counts: dict[JobState, int] = {}
        for group in job.status.task_groups.values():
            for task_state, n in group.counts.items():
                counted = _COUNTED.get(task_state, JobState.PENDING)
                counts[counted] = counts.get(counted, 0) + int(n)
        size = int(job.task_groups[0].task_count) if job.task_groups else 1
        queued = None
        if state == "QUEUED" or (state == "SCHEDULED" and not counts.get(JobState.RUNNING)):
            queued = last_event(job) or f"the job is {state}"
        cancelled = ""
        if state in _CANCELLING:
            cancelled = self.reasons.get(name) or f"GCP Batch reports the job {state}"
        return Parent(
            name, job, array=size > 1, counts=counts, size=size, final=state in _FINAL_JOB or state == "DELETION_IN_PROGRESS",
            queued=queued, cancelled=cancelled,
        )

    def children(self, parent: Parent, states: Collection[JobState]) -> dict[int, Any]:
        """Tasks in ``states``: one filtered ListTasks listing per Batch state that maps to them."""
        wanted = [s for s, counted in _COUNTED.items() if counted in states and s != "PENDING"]
        counts = {k: int(n) for g in parent.native.status.task_groups.values() for k, n in g.counts.items()}
        return {
            int(task.name.rpartition("/")[2]): task
            for state in wanted if counts.get(state)
            for task in self.tasks(parent.id, state)
        }

    def tasks(self, job_id: str, state: str) -> list[Any]:
        """The tasks of job ``job_id`` in ``state`` (ListTasks' filter), every page."""
        from google.cloud import batch_v1

        name = job_name(job_id)
        request = batch_v1.ListTasksRequest(parent=f"{name}/taskGroups/group0", filter=f"State={state}", page_size=LIST_PAGE)

        def once() -> list[Any]:
            return list(self.api.client("batch").list_tasks(request=request, retry=None))

        found: list[Any] = self.api.run("ListTasks", once, what=f"ListTasks {name} State={state}")
        return found

    def status(self, native: Any, parent: Parent) -> Status:
        """A listed task's status, or a plain job's (its one task, listed when it failed)."""
        if hasattr(native, "task_groups"):  # a plain job
            state = type(native.status.state)(native.status.state).name
            if state in _CANCELLING:
                return Status(JobState.CANCELLED, parent.cancelled)
            if state == "FAILED":
                failed = self.tasks(parent.id, "FAILED")
                return self.status(failed[0], parent) if failed else Status(JobState.FAILED, last_event(native))
            return Status({"SUCCEEDED": JobState.COMPLETED, "RUNNING": JobState.RUNNING}.get(state, JobState.PENDING))
        state = type(native.status.state)(native.status.state).name
        if state == "UNEXECUTED":
            return Status(JobState.CANCELLED, parent.cancelled or "not run: its job ended first")
        if state != "FAILED":
            return Status(_COUNTED.get(state, JobState.PENDING))
        code, said = _exit(native)
        memory = bool(parent.native.task_groups[0].task_spec.compute_resource.memory_mib)
        if code in _RESERVED:
            found, why = _RESERVED[code]
            retries = parent.native.task_groups[0].task_spec.max_retry_count
            if code == 50001:
                why += f", after {retries} retries (gcp_batch_spot_retries)"
            return Status(found, f"{why}: {said}")
        if killed_for_memory(code, memory):
            return Status(JobState.OUT_OF_MEMORY, f"exit code {code}, over its memoryMib (mem_gb): {said}")
        return worker_exit(code) or Status(JobState.FAILED, f"exit code {code}: {said}" if code is not None else said)

    def cancel(self, parent: Parent, reason: str) -> None:
        self.reasons[parent.id] = reason
        self.api.batch("CancelJob", name=job_name(parent.id), what=f"CancelJob {parent.id}").result()


def last_event(job_or_task: Any) -> str:
    """The newest status event's description (Batch's own words for where it stands)."""
    events = list(job_or_task.status.status_events)
    return str(events[-1].description) if events else ""


def _exit(task: Any) -> tuple[int | None, str]:
    """The exit code of a failed task and the event that says it."""
    for event in reversed(list(task.status.status_events)):
        if "task_execution" in event:
            return int(event.task_execution.exit_code), str(event.description)
    return None, last_event(task)
