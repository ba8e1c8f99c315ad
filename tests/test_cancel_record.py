"""A cancel recorded in the job folder: the worker's checks and the ``Job``'s reading of the record.

Real: the worker (in this process, and as the local backend's task processes), the folder on this
machine's disk.  The backend of the last test is a stub that calls every task COMPLETED, as a
scheduler does for a task whose worker left without a result.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

import jobsub
from jobsub import worker
from jobsub.backends.base import Backend
from jobsub.errors import JobCancelledError
from jobsub.folder import JobFolder
from jobsub.job import Job
from jobsub.states import JobState, Status
from jobsub.storage import open_storage
from tests import tasks


def test_the_worker_does_not_start_a_task_whose_cancel_is_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "ran"
    job = jobsub.AutoExecutor(tmp_path, cluster="debug").submit(marker.touch)
    job.folder.write_exit(job.index, "CANCELLED", "cancelled by the user")
    with caplog.at_level(logging.WARNING, logger="jobsub.worker"):
        assert worker.run_task(job.folder, job.index, 0) == 0
    assert not marker.exists(), "the callable of a cancelled task ran"
    assert job.folder.read_result(job.index, 0) is None
    assert "cancelled before it started (cancelled by the user): not running it" in caplog.text


def test_a_task_cancelled_while_it_ran_publishes_no_result(tmp_path: Path) -> None:
    """Through the local backend's task process: the function returns, but its task was cancelled
    meanwhile (the record appears while it runs): no result, and the job reads CANCELLED."""
    ex = jobsub.AutoExecutor(tmp_path, cluster="local")
    job = ex.submit(tasks.cancel_self_then_return, 42)
    with pytest.raises(JobCancelledError, match="cancelled while it ran"):
        job.result(timeout=60)
    assert job.state is JobState.CANCELLED
    assert job.folder.read_result(job.index, 0) is None
    assert "its result is not published" in (job.stderr() or "")


class _SaysCompleted(Backend):
    """A scheduler's word for a task whose worker exited 0 without a result: COMPLETED."""

    name = "says-completed"

    def states(self, backend_ids: Sequence[str]) -> dict[str, Status]:
        return {backend_id: Status(JobState.COMPLETED) for backend_id in backend_ids}

    def cancel(self, backend_ids: Sequence[str]) -> None:
        raise AssertionError("not asked: the task had ended")


def test_a_task_ended_without_a_result_whose_cancel_is_recorded_reads_cancelled(tmp_path: Path) -> None:
    """Another process cancelled it alone (GCP Batch, Kubernetes): its scheduler says it ended,
    the folder says why it left no result."""
    backend = _SaysCompleted(str(tmp_path))
    folder = JobFolder.create(open_storage(str(tmp_path)))
    other = Job.bind(backend, folder, "A_1", 1, 1)
    assert other.status().state is JobState.COMPLETED  # no record: the scheduler's word stands
    folder.write_exit(0, "CANCELLED", "cancelled by the user")
    job = Job.bind(backend, folder, "A_0", 0, 1)
    assert job.status() == Status(JobState.CANCELLED, "cancelled by the user")
    assert job.done() and not job.cancel()
    with pytest.raises(JobCancelledError, match="cancelled by the user"):
        job.result(timeout=10)
