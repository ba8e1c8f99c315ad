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
