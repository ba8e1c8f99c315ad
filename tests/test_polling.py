"""The core's polling contract, checked with an injected fake backend.

A fake is used here on purpose: these tests count backend calls made by the
core (jobsub/polling.py, jobsub/job.py), which no real scheduler exposes.
The real backends' own tests check the same contract against real services.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from pathlib import Path

import pytest

import jobsub
from jobsub.backends.base import Backend, Launch
from jobsub.errors import BackendError
from jobsub.folder import JobFolder
from jobsub.parameters import Resolved
from jobsub.states import JobState, Status


class CountingBackend(Backend):
    """Accepts submissions, runs nothing, answers states from a dict and counts calls."""

    name = "counting"
    poll_interval_s = 3600.0

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.calls: list[list[str]] = []
        self.answer = JobState.RUNNING
        self.broken = False
        self.submitted = 0

    def submit(self, launch: Launch, n_tasks: int, params: Resolved, folder: JobFolder, *, array: bool) -> str:
        self.submitted += 1
        return str(76 + self.submitted)  # 77, 78, ...

    def states(self, backend_ids: Sequence[str]) -> dict[str, Status]:
        self.calls.append(list(backend_ids))
        if self.broken:
            raise BackendError("controller down")
        return {i: Status(self.answer, "as told") for i in backend_ids}

    def cancel(self, backend_ids: Sequence[str]) -> None:
        pass


def test_one_call_for_ten_thousand_jobs(tmp_path: Path) -> None:
    backend = CountingBackend(str(tmp_path))
    ex = jobsub.Executor(tmp_path, backend=backend)
    jobs = ex.map_array(operator.add, range(10_000), range(10_000))
    assert {j.state for j in jobs} == {JobState.RUNNING}
    assert len(backend.calls) == 1 and len(backend.calls[0]) == 10_000


def test_a_loop_of_submits_does_not_ask_once_per_job(tmp_path: Path) -> None:
    """Just-submitted jobs are PENDING until the next interval; they need no call of their own."""
    backend = CountingBackend(str(tmp_path))
    ex = jobsub.Executor(tmp_path, backend=backend)
    states = [ex.submit(operator.add, i, i).state for i in range(20)]
    assert states == [JobState.RUNNING] + [JobState.PENDING] * 19
    assert len(backend.calls) == 1


def test_reattached_handles_get_a_real_state_at_once(tmp_path: Path) -> None:
    """A handle nobody asked about yet does not say UNKNOWN until the next interval; handles made together share the call."""
    backend = CountingBackend(str(tmp_path))
    folder = jobsub.Executor(tmp_path, backend=backend).submit(operator.add, 1, 2).folder
    handles = [jobsub.Job.bind(backend, folder, f"88_{i}", i, 1) for i in range(3)]
    assert [h.state for h in handles] == [JobState.RUNNING] * 3
    assert len(backend.calls) == 1 and {"88_0", "88_1", "88_2"} <= set(backend.calls[0])


def test_final_states_are_never_asked_again(tmp_path: Path) -> None:
    backend = CountingBackend(str(tmp_path))
    jobs = jobsub.Executor(tmp_path, backend=backend).map_array(operator.add, [1, 2], [3, 4])
    backend.answer = JobState.CANCELLED
    poller = jobs[0]._poller
    poller.status(jobs[0].job_id, force=True)
    poller.status(jobs[0].job_id, force=True)
    assert backend.calls == [["77_0", "77_1"]]  # both ended in the first call: no second call


def test_unreachable_backend_backs_off(tmp_path: Path) -> None:
    backend = CountingBackend(str(tmp_path))
    backend.poll_interval_s = 0.0
    job = jobsub.Executor(tmp_path, backend=backend).submit(operator.add, 1, 2)
    backend.broken = True
    assert job.state is JobState.PENDING  # the last known state (as submitted) stays
    job._poller.interval = 0.2
    for _ in range(20):
        job.done()
    assert len(backend.calls) == 1, "after a failure the poller waits (interval doubled) before retrying"


def test_final_state_without_result_raises_typed_error(tmp_path: Path) -> None:
    backend = CountingBackend(str(tmp_path))
    backend.result_grace_s = 0.0
    job = jobsub.Executor(tmp_path, backend=backend).submit(operator.add, 1, 2)
    backend.answer = JobState.OUT_OF_MEMORY
    with pytest.raises(jobsub.OutOfMemoryError, match="as told") as info:
        job.result(timeout=5)
    assert info.value.state is JobState.OUT_OF_MEMORY
