"""The ``jobsub`` command on a real local job folder."""

from __future__ import annotations

from pathlib import Path

import pytest

import jobsub
from jobsub.cli import main
from tests import tasks


def test_status_logs_cancel(local_executor: jobsub.AutoExecutor, capsys: pytest.CaptureFixture[str]) -> None:
    done = local_executor.submit(tasks.print_and_return, "cli text")
    done.result(timeout=30)
    slow = local_executor.submit(tasks.sleep_then, 60)
    assert main(["logs", str(local_executor.folder), done.job_id]) == 0
    assert "cli text" in capsys.readouterr().out
    assert main(["cancel", str(local_executor.folder), slow.job_id]) == 0
    assert "cancelled" in capsys.readouterr().out
    with pytest.raises(jobsub.JobCancelledError):
        slow.result(timeout=30)
    assert main(["status", str(local_executor.folder)]) == 0
    out = capsys.readouterr().out
    assert "1 COMPLETED" in out and "1 CANCELLED" in out


def test_status_of_empty_folder(tmp_path: Path) -> None:
    assert main(["status", str(tmp_path)]) == 1
