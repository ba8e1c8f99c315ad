"""The ``jobsub`` command on a real local job folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import jobsub
from jobsub.cli import main
from tests import tasks
from tests.conftest import require, wait_until

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``jobsub ARGS`` in a new process (``python -m jobsub``), as a shell runs it."""
    return subprocess.run([sys.executable, "-m", "jobsub", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env=env)


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


def test_status_of_running_submissions_and_nested_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every submission gets a real state (not UNKNOWN), from the folder as the executor was given it or a parent."""
    ex = jobsub.AutoExecutor(folder=tmp_path / "runs" / "sweep" / "%j", cluster="local")
    ex.update_parameters(array_parallelism=1)
    slow = ex.map_array(tasks.sleep_then, [30, 30])
    other = ex.submit(tasks.sleep_then, 30)
    try:
        for folder in (tmp_path / "runs" / "sweep" / "%j", tmp_path / "runs"):
            assert main(["status", str(folder)]) == 0
            out = capsys.readouterr().out
            assert "UNKNOWN" not in out and "peak RSS" not in out
            lines = out.splitlines()
            assert len(lines) == 2 and all("PENDING" in line or "RUNNING" in line for line in lines)
    finally:
        for job in (*slow, other):
            job.cancel()


def test_cli_errors_are_one_line(local_executor: jobsub.AutoExecutor, capsys: pytest.CaptureFixture[str]) -> None:
    jobs = local_executor.map_array(tasks.add, [1, 2], [3, 4])
    array_id = jobs[0].job_id.rpartition("_")[0]
    assert main(["logs", str(local_executor.folder), "no-such-job"]) == 1
    assert capsys.readouterr().err.startswith("jobsub logs: no job 'no-such-job' was submitted with folder")
    assert main(["logs", str(local_executor.folder), array_id]) == 1
    assert f"is an array of 2 tasks: name one, {array_id}_0 to {array_id}_1" in capsys.readouterr().err
    for bad in (f"{array_id}_x", f"{array_id}_7"):  # not a task of the array: never a job pending forever
        assert main(["logs", str(local_executor.folder), bad]) == 1
        assert capsys.readouterr().err == f"jobsub logs: '{bad}': array {array_id} has tasks {array_id}_0 to {array_id}_1\n"


def test_cancel_an_array_by_its_id_and_go_on_after_a_bad_id(
    local_executor: jobsub.AutoExecutor, capsys: pytest.CaptureFixture[str]
) -> None:
    local_executor.update_parameters(array_parallelism=1)
    array = local_executor.map_array(tasks.sleep_then, [60, 60, 60])
    single = local_executor.submit(tasks.sleep_then, 60)
    array_id = array[0].job_id.rpartition("_")[0]
    assert main(["cancel", str(local_executor.folder), array_id, "no-such-job", single.job_id]) == 1
    captured = capsys.readouterr()
    assert f"{array_id}: cancelled" in captured.out and f"{single.job_id}: cancelled" in captured.out
    assert "jobsub cancel: no job 'no-such-job'" in captured.err
    for job in (*array, single):
        with pytest.raises(jobsub.JobCancelledError):
            job.result(timeout=30)


def test_cancel_reaches_the_server_that_holds_the_job(local_executor: jobsub.AutoExecutor, tmp_path: Path) -> None:
    """A process whose own default fork server differs (another interpreter, JOBSUB_LOCAL_DIR) still cancels."""
    job = local_executor.submit(tasks.sleep_then, 60)
    elsewhere = tmp_path / "elsewhere"
    code = f"import jobsub; print(jobsub.Job({str(local_executor.folder)!r}, {job.job_id!r}).cancel())"
    env = {**os.environ, "JOBSUB_LOCAL_DIR": str(elsewhere)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    with pytest.raises(jobsub.JobCancelledError):
        job.result(timeout=30)
    assert not list(elsewhere.glob("*.sock"))  # no second server was started for the cancel
    again = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert again.stdout.strip() == "False"  # it has ended: nothing to cancel


_HELD_BEHIND_SLURM = """
import sys, jobsub
from tests import tasks
from tests.conftest import backend_parameters
slurm = jobsub.AutoExecutor(sys.argv[1] + "/slurm", cluster="slurm")
slurm.update_parameters(mem_gb=0.25, **backend_parameters("slurm"))
up = slurm.submit(tasks.add, 1, 1)
local = jobsub.AutoExecutor(sys.argv[1] + "/local", cluster="local")
print(up.job_id, local.submit(tasks.add, up, 1).job_id)
"""


@pytest.mark.slurm
@pytest.mark.parametrize("command", [["attach", "--once"], ["status"]])
def test_a_one_look_command_releases_a_held_submission_whose_upstream_succeeded(
    tmp_path: Path, command: list[str]
) -> None:
    """Issue 26 item 6: the background releaser these commands start must not make their own look a no-op.

    Real: a Slurm upstream, a local downstream held behind it by a process that exited at once.
    """
    require("slurm")
    made = subprocess.run([sys.executable, "-c", _HELD_BEHIND_SLURM, str(tmp_path)],
                          capture_output=True, text=True, check=True, cwd=ROOT, timeout=120)
    up_id, held_id = made.stdout.split()
    wait_until(lambda: jobsub.Job(tmp_path / "slurm", up_id).done(), timeout=120, what="the Slurm upstream ends")
    ran = _cli(*command[:1], str(tmp_path / "local"), *command[1:])
    assert ran.returncode == 0, ran.stderr
    if command[0] == "attach":
        assert "released as" in ran.stdout, ran.stdout
    meta = jobsub.Job(tmp_path / "local", held_id).folder.read_meta()
    assert meta.get("submissions"), f"still held after `jobsub {' '.join(command)}`: {ran.stdout}"
    assert jobsub.Job(tmp_path / "local", held_id).result(timeout=120) == 3
