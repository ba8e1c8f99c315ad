"""The array tracker's suite (tests/conformance/arrays.py) on GCP Batch's own ``BatchScheduler``.

A fake ``BatchServiceClient`` answers from the suite's script with Batch v1's own messages
(proto-plus ``Job`` with task-group counts by state name, ``Task`` with status events carrying
exit codes, QUEUED with its status event, CANCELLED).  What is real: the tracker, the Google
gateway (pacing, retries of a 429, error mapping), google-api-core's exception classes, the
proto messages.  What is played: Batch's answers.
"""

from __future__ import annotations

from typing import Any

import pytest

from jobsub.cloud.arrays import Scheduler
from jobsub.cloud.google import GoogleGateway
from jobsub.states import JobState
from tests.conformance.arrays import ArrayTrackerSuite, Script, ScriptClient, ScriptedJob, Throttled

batch_v1 = pytest.importorskip("google.cloud.batch_v1", reason="the GCP variant needs the gcp extra (pip install 'jobsub[gcp]')")

_TASK = {JobState.PENDING: "PENDING", JobState.RUNNING: "RUNNING", JobState.COMPLETED: "SUCCEEDED", JobState.FAILED: "FAILED"}


class FakeBatchServiceClient(ScriptClient):
    """GetJob, ListTasks and CancelJob from the script, as Batch v1 messages."""

    def throttled(self, kind: str, exc: Throttled) -> Exception:
        from google.api_core import exceptions

        return exceptions.TooManyRequests(str(exc))

    def _task(self, name: str, job: ScriptedJob, index: int) -> Any:
        state = _TASK[job.children[index]]
        events = []
        if state == "FAILED":
            code = 50000 if job.cancelled else job.exit_codes.get(index, 1)
            events.append(batch_v1.StatusEvent(
                description=f"Task state is updated from RUNNING to FAILED with exit code {code}",
                task_execution=batch_v1.TaskExecution(exit_code=code),
            ))
        status = batch_v1.TaskStatus(state=batch_v1.TaskStatus.State[state], status_events=events)
        return batch_v1.Task(name=f"{name}/taskGroups/group0/tasks/{index}", status=status)

    def get_job(self, name: str, retry: Any = None) -> Any:
        from google.api_core import exceptions

        self._answer("describe")
        self.script.described.append(1)
        job = self.script.jobs.get(name)
        if job is None:
            raise exceptions.NotFound(f"Job {name} not found")
        counts: dict[str, int] = {}
        for state in job.children:
            counts[_TASK[state]] = counts.get(_TASK[state], 0) + 1
        ended = all(s.is_final for s in job.children)
        if job.cancelled:
            state = "CANCELLED"
        elif job.queued:
            state = "QUEUED"
        elif ended:
            state = "FAILED" if counts.get("FAILED") else "SUCCEEDED"
        else:
            state = "RUNNING" if counts.get("RUNNING") else "SCHEDULED"
        events = [batch_v1.StatusEvent(description=job.queued)] if job.queued else []
        group = batch_v1.TaskGroup(task_count=len(job.children), task_spec=batch_v1.TaskSpec(max_retry_count=2))
        status = batch_v1.JobStatus(
            state=batch_v1.JobStatus.State[state], status_events=events,
            task_groups={"group0": batch_v1.JobStatus.TaskGroupStatus(counts=counts)},
        )
        return batch_v1.Job(name=name, task_groups=[group], status=status)

    def list_tasks(self, request: Any, retry: Any = None) -> list[Any]:
        self._answer("list")
        name = request.parent.rpartition("/taskGroups/")[0]
        wanted = request.filter.partition("=")[2]
        job = self.script.jobs[name]
        return [self._task(name, job, i) for i, s in enumerate(job.children) if _TASK[s] == wanted]

    def cancel_job(self, name: str, retry: Any = None) -> Any:
        self._answer("cancel")
        self.script.cancel(name, "cancelled")
        return _Done()


class _Done:
    def result(self) -> None:
        return None


class _ScriptedGoogle(GoogleGateway):
    first_delay_s = 0.01

    def __init__(self, script: Script) -> None:
        super().__init__()
        self._clients["batch"] = FakeBatchServiceClient(script)


class TestGCPBatchTracker(ArrayTrackerSuite):
    """GCP Batch's answers read by its own ``BatchScheduler``."""

    @pytest.fixture
    def scheduler(self, script: Script) -> Scheduler:
        from jobsub.backends.gcp_batch.scheduler import BatchScheduler

        return BatchScheduler(_ScriptedGoogle(script))

    def test_batchs_reserved_exit_codes_map_to_typed_states(self, script: Script, tracker: Any) -> None:
        """Each reserved code (scheduler.py's table, with its sources) gives its state, and the reason
        carries Batch's own status event; 50004 (meaning unconfirmed, the task or its VM) is FAILED,
        not a node failure; a code of the user's own stays the user's."""
        expected = {
            50000: JobState.FAILED, 50001: JobState.PREEMPTED, 50002: JobState.NODE_FAIL, 50003: JobState.NODE_FAIL,
            50004: JobState.FAILED, 50005: JobState.TIMEOUT, 50006: JobState.NODE_FAIL, 3: JobState.FAILED,
        }
        codes = list(expected)
        script.array("R", [JobState.FAILED] * len(codes), **{f"c{i}": code for i, code in enumerate(codes)})
        found = tracker.states([f"R_{i}" for i in range(len(codes))])
        for i, code in enumerate(codes):
            status = found[f"R_{i}"]
            assert status.state is expected[code], (code, status)
            assert f"exit code {code}" in status.reason and "Task state is updated" in status.reason, status.reason
