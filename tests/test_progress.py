"""Waiting with a progress bar (issue 29): counts by state, failures as they happen, one poll for all jobs.

Real: local jobs and the tqdm bar writing to this test's stderr; nothing is played.
"""

from __future__ import annotations

from typing import Any

import pytest

import jobsub
from jobsub import progress
from jobsub.helpers import as_completed
from tests import tasks


def test_no_bar_by_default_where_nobody_watches(local_executor: jobsub.AutoExecutor,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    jobs = local_executor.map_array(tasks.add, [1, 2], [3, 4])
    assert not progress.watched()  # pytest's stderr is no terminal
    jobsub.wait(jobs, timeout=60)
    assert capsys.readouterr().err == ""
    assert all(job.done() for job in jobs)


def test_one_backend_call_per_look_whatever_the_number_of_jobs(
    local_executor: jobsub.AutoExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bar asks the states through the jobs' shared poller: never a backend call per job."""
    local_executor.update_parameters(array_parallelism=4)
    jobs = local_executor.map_array(tasks.sleep_then, [0.3] * 12)
    backend = local_executor.backend
    asked: list[int] = []
    looks: list[int] = []
    real_states, real_update = backend.states, progress.Progress.update

    def states(ids: Any) -> Any:
        asked.append(len(ids))
        return real_states(ids)

    def update(self: progress.Progress, ended: Any, running: Any) -> None:
        looks.append(len(running))
        real_update(self, ended, running)

    monkeypatch.setattr(backend, "states", states)
    monkeypatch.setattr(progress.Progress, "update", update)
    jobsub.wait(jobs, timeout=120, progress=True)
    assert len(asked) <= len(looks) + 1, (asked, looks)


def test_as_completed_and_results_with_a_bar(local_executor: jobsub.AutoExecutor,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    jobs = local_executor.map_array(tasks.fail_on, range(3), [2] * 3)
    seen = list(as_completed(jobs, timeout=60, poll_frequency=0.05, progress=True))
    assert sorted(j.job_id for j in seen) == sorted(j.job_id for j in jobs)
    assert "task 2" in capsys.readouterr().err
    values = jobsub.results(jobs, progress=False, return_exceptions=True)
    assert values[:2] == [0, 1] and isinstance(values[2], jobsub.FailedJobError)
    with pytest.raises(jobsub.FailedJobError, match="task 2 fails"):
        jobsub.results(jobs, progress=False)
    with pytest.raises(TimeoutError, match="1 of 1 jobs not done"):
        jobsub.wait([local_executor.submit(tasks.sleep_then, 30)], timeout=0.2, progress=False)
