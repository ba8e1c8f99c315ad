"""Behaviour every backend must show, written once and run on each of them.

The ``executor`` fixture (conftest.py) is parametrized over local, debug,
Slurm and Docker; tests that a backend cannot support by design (the debug
backend runs in-process, so it has no time limit and no ranks in parallel)
say so where they branch.
"""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import jobsub
from jobsub import JobState
from tests import tasks


def test_submit_and_result(executor: jobsub.AutoExecutor) -> None:
    job = executor.submit(tasks.add, 5, 7)
    assert job.result(timeout=120) == 12
    assert job.done()
    assert job.state == "COMPLETED"
    assert job.exception() is None


def test_map_array_is_one_submission(executor: jobsub.AutoExecutor) -> None:
    jobs = executor.map_array(tasks.add, [1, 2, 3, 4], [10, 20, 30, 40])
    assert [j.result(timeout=180) for j in jobs] == [11, 22, 33, 44]
    bases = {j.job_id.rsplit("_", 1)[0] for j in jobs}
    assert len(bases) == 1, "map_array must be ONE backend submission"
    assert [j.job_id.rsplit("_", 1)[1] for j in jobs] == ["0", "1", "2", "3"]


def test_batch_is_one_array(executor: jobsub.AutoExecutor) -> None:
    jobs = []
    with executor.batch():
        for k in range(3):
            jobs.append(executor.submit(tasks.add, k, 1))
        with pytest.raises(jobsub.InvalidStateError, match="batch"):
            jobs[0].job_id  # noqa: B018 - touching a job inside the block is the error
    assert [j.result(timeout=180) for j in jobs] == [1, 2, 3]
    assert len({j.job_id.rsplit("_", 1)[0] for j in jobs}) == 1


def test_batch_error_submits_nothing(executor: jobsub.AutoExecutor) -> None:
    with pytest.raises(RuntimeError, match="boom"), executor.batch():
        executor.submit(tasks.add, 1, 1)
        raise RuntimeError("boom")
    assert not any(p for p in executor.folder.iterdir() if not p.name.startswith("."))


def test_failure_carries_remote_traceback(executor: jobsub.AutoExecutor) -> None:
    job = executor.submit(tasks.fail, "bad input 42")
    if executor.cluster == "debug":  # debug raises the function's own exception
        with pytest.raises(ValueError, match="bad input 42"):
            job.result()
        return
    with pytest.raises(jobsub.FailedJobError) as info:
        job.result(timeout=120)
    text = str(info.value)
    assert "ValueError: bad input 42" in text
    assert "tasks.py" in text and "in fail" in text  # the remote traceback, down to the line
    assert isinstance(info.value.__cause__, ValueError)
    assert "in fail" in str(info.value.__cause__.__cause__)
    assert job.state in ("FAILED", "COMPLETED")
    assert isinstance(job.exception(), jobsub.FailedJobError)
    stderr = job.stderr() or ""  # the log says why too, as with submitit
    assert "the job failed" in stderr and "ValueError: bad input 42" in stderr


def test_unpicklable_return_value_is_reported(executor: jobsub.AutoExecutor) -> None:
    job = executor.submit(tasks.return_unpicklable)
    with pytest.raises((jobsub.FailedJobError, jobsub.PicklingError)) as info:
        job.result(timeout=120)
    assert "could not be pickled" in str(info.value)


def test_unpicklable_exception_keeps_its_text(executor: jobsub.AutoExecutor) -> None:
    job = executor.submit(tasks.raise_unpicklable)
    with pytest.raises(Exception, match="cannot travel") as info:
        job.result(timeout=120)
    if executor.cluster != "debug":
        assert isinstance(info.value, jobsub.FailedJobError)
        assert "UnpicklableError" in str(info.value)


def test_unpicklable_argument_fails_at_submit(executor: jobsub.AutoExecutor) -> None:
    import threading

    with pytest.raises(jobsub.PicklingError, match=r"argument #1 of add \(<unlocked _thread.lock"):
        executor.submit(tasks.add, 1, threading.Lock())
    lock = threading.Lock()
    with pytest.raises(jobsub.PicklingError, match="the function"):
        executor.submit(lambda: lock.locked())
    with pytest.raises(jobsub.PicklingError, match=r"argument #0 of add .* in item 1 of the array"):
        executor.map_array(tasks.add, [1, lock, 3], [1, 2, 3])
    with pytest.raises(TypeError, match=r"submit\(\) needs a callable to run, got int 42"):
        executor.submit(42)  # type: ignore[arg-type]
    assert not any(p for p in executor.folder.iterdir() if not p.name.startswith("."))


def test_map_array_of_unequal_lengths_warns(executor: jobsub.AutoExecutor) -> None:
    with pytest.warns(RuntimeWarning, match=r"different lengths \(3, 2\).* submits 2 jobs"):
        jobs = executor.map_array(tasks.add, [1, 2, 3], [10, 20])
    assert [j.result(timeout=120) for j in jobs] == [11, 22]


def test_logs(executor: jobsub.AutoExecutor) -> None:
    job = executor.submit(tasks.print_and_return, "hello logs")
    assert job.result(timeout=120) == "hello logs"
    if executor.cluster == "debug":
        return  # in-process: output goes to this process's own streams
    assert "hello logs" in (job.stdout() or "")
    assert "to stderr: hello logs" in (job.stderr() or "")


def test_task_logging_at_info_is_shown(executor: jobsub.AutoExecutor) -> None:
    """A task's own ``logging.info`` records reach its stderr, with level and logger name."""
    job = executor.submit(tasks.log_and_return, "a record")
    assert job.result(timeout=120) == "a record"
    if executor.cluster == "debug":
        return  # in-process: this process's logging configuration applies
    assert "tests.tasks INFO: logged: a record" in (job.stderr() or "")


def test_job_environment(executor: jobsub.AutoExecutor) -> None:
    job = executor.submit(tasks.describe_environment)
    info = job.result(timeout=120)
    assert info["job_id"] == job.job_id
    assert info["global_rank"] == 0 and info["num_tasks"] == 1
    assert info["cluster"] == executor.cluster
    assert Path(info["result_pickle"]) == job.paths.result_pickle


def test_array_environment(executor: jobsub.AutoExecutor) -> None:
    jobs = executor.submit_array([tasks.describe_environment] * 3)
    infos = [j.result(timeout=180) for j in jobs]
    assert [i["array_index"] for i in infos] == [0, 1, 2]
    assert [i["job_id"] for i in infos] == [j.job_id for j in jobs]


def test_multi_task_job(executor: jobsub.AutoExecutor) -> None:
    executor.update_parameters(tasks_per_node=3)
    job = executor.submit(tasks.describe_environment)
    results = job.results(timeout=180)
    assert sorted(r["global_rank"] for r in results) == [0, 1, 2]
    assert all(r["num_tasks"] == 3 for r in results)
    assert job.task(2).result()["global_rank"] == 2
    assert job.num_tasks == 3


def test_cancel(executor: jobsub.AutoExecutor) -> None:
    job = executor.submit(tasks.sleep_then, 120)
    assert job.cancel()
    with pytest.raises(jobsub.JobCancelledError) as info:
        job.result(timeout=120)
    assert info.value.state is JobState.CANCELLED
    assert job.cancelled()


@pytest.mark.not_on("debug", "slurm")  # debug: in-process, no limit; Slurm: see test_slurm.py (1 min minimum)
def test_timeout(executor: jobsub.AutoExecutor) -> None:
    executor.update_parameters(timeout_min=0.03)
    job = executor.submit(tasks.sleep_then, 60)
    with pytest.raises(jobsub.JobTimeoutError) as info:
        job.result(timeout=120)
    assert info.value.state is JobState.TIMEOUT
    assert job.state == "TIMEOUT"


def test_awaitable_and_callbacks(executor: jobsub.AutoExecutor) -> None:
    job = executor.submit(tasks.add, 2, 3)

    async def both() -> tuple[int, int]:
        return await job.awaitable().result(), await job

    assert asyncio.run(both()) == (5, 5)
    seen: list[int] = []
    job.add_done_callback(lambda j: seen.append(j.result()))
    assert seen == [5]


def test_job_pickles_and_reattaches(executor: jobsub.AutoExecutor) -> None:
    job = executor.submit(tasks.add, 1, 2)
    clone = pickle.loads(pickle.dumps(job))
    assert clone.result(timeout=120) == 3
    again = jobsub.Job(folder=executor.folder, job_id=job.job_id)
    assert again.result() == 3
    assert again.job_id == job.job_id


def test_job_as_argument_is_a_dependency(executor: jobsub.AutoExecutor) -> None:
    first = executor.submit(tasks.add, 1, 2)
    second = executor.submit(tasks.add, first, 10)
    assert second.result(timeout=180) == 13


def test_failed_dependency_cancels_the_dependent(executor: jobsub.AutoExecutor) -> None:
    """The same on every backend: CANCELLED, naming the dependency that failed (never a nested failure)."""
    broken = executor.submit(tasks.fail, "upstream")
    orphan = executor.submit(tasks.add, broken, 1)
    with pytest.raises(jobsub.JobCancelledError, match="dependency failed") as info:
        orphan.result(timeout=120)
    assert broken.job_id in str(info.value) and info.value.state is JobState.CANCELLED
    assert orphan.state == "CANCELLED"


def test_usage_is_recorded(executor: jobsub.AutoExecutor) -> None:
    job = executor.submit(tasks.add, 1, 1)
    job.result(timeout=120)
    (usage,) = job.usage
    assert usage["elapsed_s"] >= 0 and usage["max_rss_mb"] > 0 and usage["host"]


REATTACH_SCRIPT = textwrap.dedent(
    """
    import sys, jobsub
    from tests import tasks
    ex = jobsub.AutoExecutor(folder=sys.argv[1], cluster=sys.argv[2])
    ex.update_parameters(**eval(sys.argv[3]))
    job = ex.submit(tasks.sleep_then, 1.5, "survived")
    print(job.job_id)
    """
)


@pytest.mark.not_on("debug")  # debug jobs live in their submitting process
def test_reattach_from_new_process(executor: jobsub.AutoExecutor, backend: str) -> None:
    from tests.conftest import backend_parameters

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", REATTACH_SCRIPT, str(executor.folder), backend, repr(backend_parameters(backend))],
        capture_output=True, text=True, check=True, cwd=root,
    )
    job_id = out.stdout.strip().splitlines()[-1]
    # the submitting process has exited; the job must still run and be found again
    job = jobsub.Job(folder=executor.folder, job_id=job_id)
    assert job.result(timeout=180) == "survived"
