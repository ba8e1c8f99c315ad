"""The debug backend: in-process, lazy, and raising the function's own exception."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import jobsub
from tests import tasks
from tests.conformance.behaviour import BackendSuite


class TestDebugBehaviour(BackendSuite):
    cluster = "debug"


def test_runs_lazily_in_this_process(tmp_path: Path) -> None:
    ex = jobsub.AutoExecutor(tmp_path, cluster="debug")
    marker = tmp_path / "ran"
    job = ex.submit(marker.touch)
    assert not marker.exists()  # nothing ran at submit: a breakpoint would stop in result()
    job.result()
    assert marker.exists()
    assert ex.submit(os.getpid).result() == os.getpid()


def test_exceptions_are_raised_directly(tmp_path: Path) -> None:
    job = jobsub.AutoExecutor(tmp_path, cluster="debug").submit(tasks.fail, "direct")
    with pytest.raises(ValueError, match="direct") as info:
        job.result()
    assert "in fail" in str(info.value.__cause__)  # the traceback travels along


def test_arguments_still_go_through_pickle(tmp_path: Path) -> None:
    import threading

    ex = jobsub.AutoExecutor(tmp_path, cluster="debug")
    with pytest.raises(jobsub.PicklingError):
        ex.submit(tasks.add, threading.Lock(), 1)
    data = [1, 2]
    job = ex.submit(list.append, data, 3)
    job.result()
    assert data == [1, 2], "the job worked on a copy, as a remote job would"


def test_a_debug_job_is_queued_until_it_runs(tmp_path: Path) -> None:
    """submitit's word for a debug job not run yet, and what ``status()`` says of it."""
    job = jobsub.DebugExecutor(tmp_path).submit(tasks.add, 1, 2)
    assert job.state == "QUEUED" and "waited for" in job.status().reason
    assert job.result() == 3 and job.state == "COMPLETED"


def test_a_debug_failure_is_raised_not_also_logged(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    job = jobsub.DebugExecutor(tmp_path).submit(tasks.fail, "boom")
    with pytest.raises(ValueError, match="boom"):
        job.result()
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "boom" not in out + err
