"""What every backend must do, written once: a backend opts in with ONE class, ``BackendSuite``.

::

    class TestLocalBehaviour(BackendSuite):      # behaviour + DAG + guarantees + cache
        cluster = "local"

Its fixtures (``service``, ``backend_parameters``, ``folder_root``: see
tests/conformance/fixtures.py) say how the backend runs on this machine.
The same backend on another kind of folder (a bucket) runs ``BehaviourSuite``
alone.

The suite reads what the backend can do from its declared ``Capabilities``
(``jobsub.backends.base``): a test marked ``@needs("time_limit")`` is
deselected (not skipped) for a backend without that capability, so the
suite never counts a skip as a pass.  Backends whose services are not
running here are skipped, naming the script that starts them.
"""

from __future__ import annotations

import asyncio
import math
import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

import jobsub
from jobsub import JobState
from jobsub.backends.base import load_backend_class
from tests import tasks
from tests.conformance.cache import CacheSuite
from tests.conformance.dag import DagBehaviour
from tests.conformance.fixtures import BackendFixtures, needs
from tests.conformance.guarantees import GuaranteesSuite
from tests.conformance.views import ViewsSuite


class BehaviourSuite(DagBehaviour, BackendFixtures):
    """The behaviour tests (and the DAG layer's, ``DagBehaviour``); subclasses set ``cluster``."""

    local_folder: ClassVar[bool] = True
    """The executor's folder is a path here (tests that look at files directly need it)."""
    live_logs: ClassVar[bool] = True
    """A running task's output can be read while it runs (moto ships a Batch container's output
    to CloudWatch only when it stops; AWS streams it)."""
    fast_time_limits: ClassVar[bool] = True
    """The backend enforces a limit of a few seconds (Slurm counts whole minutes: its own tests
    run its one-minute jobs while the others run)."""
    checkpoint_margin_s: ClassVar[float] = 1.5
    """What the checkpoint test leaves a task before its pre-timeout signal (to start and install its
    handler) and after it (to write the checkpoint): a process forked on this machine needs little; a
    container, or a task that imports an SDK to reach a bucket, needs more on a busy machine."""

    # -- submitting and results -------------------------------------------------------------
    def test_submit_and_result(self, executor: jobsub.AutoExecutor) -> None:
        job = executor.submit(tasks.add, 5, 7)
        assert job.result(timeout=120) == 12
        assert job.done()
        assert job.state == "COMPLETED"
        assert job.exception() is None

    def test_map_array_is_one_submission(self, executor: jobsub.AutoExecutor) -> None:
        jobs = executor.map_array(tasks.add, [1, 2, 3, 4], [10, 20, 30, 40])
        assert [j.result(timeout=180) for j in jobs] == [11, 22, 33, 44]
        bases = {j.job_id.rsplit("_", 1)[0] for j in jobs}
        assert len(bases) == 1, "map_array must be ONE backend submission"
        assert [j.job_id.rsplit("_", 1)[1] for j in jobs] == ["0", "1", "2", "3"]

    def test_batch_is_one_array(self, executor: jobsub.AutoExecutor) -> None:
        jobs = []
        with executor.batch():
            for k in range(3):
                jobs.append(executor.submit(tasks.add, k, 1))
            with pytest.raises(jobsub.InvalidStateError, match="batch"):
                jobs[0].job_id  # noqa: B018 - touching a job inside the block is the error
        assert [j.result(timeout=180) for j in jobs] == [1, 2, 3]
        assert len({j.job_id.rsplit("_", 1)[0] for j in jobs}) == 1

    @needs("local_folder")
    def test_batch_error_submits_nothing(self, executor: jobsub.AutoExecutor) -> None:
        with pytest.raises(RuntimeError, match="boom"), executor.batch():
            executor.submit(tasks.add, 1, 1)
            raise RuntimeError("boom")
        assert not any(p for p in executor.folder.iterdir() if not p.name.startswith("."))

    def test_usage_is_recorded(self, executor: jobsub.AutoExecutor) -> None:
        job = executor.submit(tasks.add, 1, 1)
        job.result(timeout=120)
        (usage,) = job.usage
        assert usage["elapsed_s"] >= 0 and usage["max_rss_mb"] > 0 and usage["host"]

    def test_awaitable_and_callbacks(self, executor: jobsub.AutoExecutor) -> None:
        job = executor.submit(tasks.add, 2, 3)

        async def both() -> tuple[int, int]:
            return await job.awaitable().result(), await job

        assert asyncio.run(both()) == (5, 5)
        seen: list[int] = []
        job.add_done_callback(lambda j: seen.append(j.result()))
        assert seen == [5]

    # -- failures: typed, with the remote traceback, never a false success ----------------------
    def test_failure_carries_remote_traceback(self, executor: jobsub.AutoExecutor) -> None:
        job = executor.submit(tasks.fail, "bad input 42")
        if self.caps.reraise_original:  # the function's own exception
            with pytest.raises(ValueError, match="bad input 42") as raw:
                job.result()
            assert "in fail" in str(raw.value.__cause__)  # the traceback travels along
            return
        with pytest.raises(jobsub.FailedJobError) as info:
            job.result(timeout=120)
        text = str(info.value)
        assert "ValueError: bad input 42" in text
        assert "tasks.py" in text and "in fail" in text  # the remote traceback, down to the line
        assert isinstance(info.value.__cause__, ValueError)
        assert info.value.__cause__.__cause__ is None  # the traceback is shown once: in the message
        frames = [str(entry.path) for entry in info.traceback]
        assert sum("/jobsub/" in name for name in frames) == 1, frames  # result(), then the caller's own code
        assert job.state in ("FAILED", "COMPLETED")
        assert isinstance(job.exception(), jobsub.FailedJobError)
        if self.caps.own_logs:
            stderr = job.stderr() or ""  # the log says why too, as with submitit
            assert "the job failed" in stderr and "ValueError: bad input 42" in stderr

    def test_unpicklable_return_value_is_reported(self, executor: jobsub.AutoExecutor) -> None:
        job = executor.submit(tasks.return_unpicklable)
        with pytest.raises((jobsub.FailedJobError, jobsub.PicklingError)) as info:
            job.result(timeout=120)
        assert "could not be pickled" in str(info.value)

    def test_unpicklable_exception_keeps_its_text(self, executor: jobsub.AutoExecutor) -> None:
        job = executor.submit(tasks.raise_unpicklable)
        with pytest.raises(Exception, match="cannot travel") as info:
            job.result(timeout=120)
        if not self.caps.reraise_original:
            assert isinstance(info.value, jobsub.FailedJobError)
            assert "UnpicklableError" in str(info.value)

    @needs("isolated")  # in one process, the module the job imports is this process's too
    def test_value_of_a_class_missing_here_is_an_error_naming_it(self, executor: jobsub.AutoExecutor) -> None:
        """A returned object whose module only the job's environment has: an error, never a placeholder."""
        job = executor.submit(tasks.return_instance_of_a_module_missing_here)
        with pytest.raises(jobsub.UnreadableResultError, match="jobsub_vanishing_module") as info:
            job.result(timeout=120)
        assert job.job_id in str(info.value)
        assert isinstance(job.exception(), jobsub.UnreadableResultError)

    def test_exception_with_required_arguments_is_rebuilt(self, executor: jobsub.AutoExecutor) -> None:
        """An exception class whose __init__ needs arguments still reaches the caller, typed and whole."""
        job = executor.submit(tasks.raise_with_required_arguments)
        expected = jobsub.FailedJobError if not self.caps.reraise_original else tasks.NeedsArguments
        with pytest.raises(expected, match="code 7") as info:
            job.result(timeout=120)
        original = info.value if self.caps.reraise_original else info.value.__cause__
        assert isinstance(original, tasks.NeedsArguments)

    def test_exception_of_main_with_required_arguments(
        self, executor: jobsub.AutoExecutor, backend_parameters: dict[str, Any]
    ) -> None:
        """The same, for a class defined in the submitting script (``__main__``, pickled by value), where
        no unpickler hook reaches it; and ``jobsub status`` of its folder shows it without a traceback."""
        root = Path(__file__).resolve().parent.parent.parent
        script = textwrap.dedent(
            """
            import importlib, sys, jobsub
            importlib.import_module(sys.argv[4])  # the backend's module (one registered outside jobsub)

            class QuotaExceeded(Exception):
                def __init__(self, code, detail):
                    super().__init__(f"quota {code}: {detail}")
                    self.code = code

            def over_quota():
                raise QuotaExceeded(7, "over")

            ex = jobsub.AutoExecutor(folder=sys.argv[1], cluster=sys.argv[2])
            ex.update_parameters(**eval(sys.argv[3]))
            job = ex.submit(over_quota)
            try:
                job.result(timeout=180)
            except Exception as exc:
                original = exc if isinstance(exc, QuotaExceeded) else exc.__cause__
                print(type(original).__name__, getattr(original, "code", None), str(original))
            """
        )
        module = load_backend_class(self.cluster).__module__
        out = subprocess.run(
            [sys.executable, "-c", script, str(executor.folder), self.cluster, repr(backend_parameters), module],
            capture_output=True, text=True, cwd=root, timeout=300,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().splitlines()[-1] == "QuotaExceeded 7 quota 7: over", out.stderr
        status = subprocess.run(
            [sys.executable, "-m", "jobsub.cli", "status", str(executor.folder)],
            capture_output=True, text=True, cwd=root, timeout=300,
        )
        assert "Traceback" not in status.stderr, status.stderr
        assert "FAILED" in status.stdout or not self.caps.survives_client, status.stdout  # debug: LOST

    def test_secrets_reach_tasks_and_never_the_folder(self, executor: jobsub.AutoExecutor) -> None:
        """The task seals its result with its submission's secret (so it got it), and no file of the
        folder holds the secret (a Slurm script excepted: 0600 on the user's own file system)."""
        from jobsub import trust

        job = executor.submit(tasks.add, 1, 2)
        assert job.result(timeout=180) == 3
        secret = trust.secret(job.folder.key).hex().encode()
        storage = job.folder.storage

        def walk(prefix: str) -> list[str]:
            children = storage.list(prefix)
            return [key for child in children for key in (walk(child) or [child])]

        files = [key for key in walk(job.folder.key) if not os.path.isdir(storage.local_file(key) or "")]
        assert any(key.endswith("/result/0.0.pkl") for key in files), files
        for key in files:
            if secret in storage.read_bytes(key):
                path = storage.local_file(key)
                assert key.endswith(".sh") and path is not None and os.stat(path).st_mode & 0o077 == 0, key

    @needs("isolated")  # in one process, it would close the test's own stderr
    def test_closed_stderr_does_not_hide_the_error(self, executor: jobsub.AutoExecutor) -> None:
        """A task that closes its stderr and then raises: its own exception, not "failed without a result"."""
        job = executor.submit(tasks.close_stderr_then_fail, "after closing stderr")
        with pytest.raises(Exception, match="after closing stderr"):
            job.result(timeout=120)

    def test_system_exit_is_a_failure_not_the_callers_exit(self, executor: jobsub.AutoExecutor) -> None:
        """sys.exit(0) in a job ends the job, never the program waiting on it, and is no success."""
        job = executor.submit(tasks.exit_with, 0)
        with pytest.raises(jobsub.FailedJobError, match="SystemExit"):
            job.result(timeout=120)

    @needs("isolated", "local_folder")  # in one process, os._exit would end the test itself
    def test_exit_code_75_without_a_checkpoint_is_not_rerun(self, executor: jobsub.AutoExecutor) -> None:
        """75 is the requeue code; a task that merely exits with it ran once and says so."""
        job = executor.submit(tasks.hard_exit, 75)
        with pytest.raises(jobsub.JobError, match="exit code 75"):
            job.result(timeout=120)
        assert (job.paths.folder / "runs.txt").read_text().count("ran") == 1

    @needs("local_folder")
    def test_unpicklable_argument_fails_at_submit(self, executor: jobsub.AutoExecutor) -> None:
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

    def test_map_array_of_unequal_lengths_warns(self, executor: jobsub.AutoExecutor) -> None:
        with pytest.warns(RuntimeWarning, match=r"different lengths \(3, 2\).* submits 2 jobs"):
            jobs = executor.map_array(tasks.add, [1, 2, 3], [10, 20])
        assert [j.result(timeout=120) for j in jobs] == [11, 22]

    @needs("local_folder")
    def test_deleted_folder_is_lost_not_waited_for(self, executor: jobsub.AutoExecutor) -> None:
        """The job's folder removed after it ended, before anyone looked: a typed error, at once."""
        job = executor.submit(tasks.add, 1, 1)
        job.wait(timeout=120)
        fresh = jobsub.Job(folder=executor.folder, job_id=job.job_id)
        import shutil

        shutil.rmtree(job.paths.folder)
        with pytest.raises(jobsub.UncompletedJobError):
            fresh.result(timeout=60)

    @needs("isolated")  # in one process, the thread would be this test process's own
    def test_a_thread_left_running_does_not_keep_the_job(self, executor: jobsub.AutoExecutor) -> None:
        """The result is written: the task ends, frees its slot, and is not cancellable any more."""
        executor.update_parameters(array_parallelism=1)
        jobs = executor.map_array(tasks.leave_a_thread_running, range(2))
        assert [j.result(timeout=120) for j in jobs] == ["returned", "returned"]  # the second one started
        deadline = time.monotonic() + 60
        while not all(JobState(jobsub.Job.watcher.get_state(j.job_id, "force")).is_final for j in jobs):
            assert time.monotonic() < deadline, "the backend still runs a task whose result is written"
            time.sleep(0.5)
        assert not jobs[0].cancel()

    # -- logs and environment -------------------------------------------------------------------
    @needs("own_logs")
    def test_logs(self, executor: jobsub.AutoExecutor) -> None:
        job = executor.submit(tasks.print_and_return, "hello logs")
        assert job.result(timeout=120) == "hello logs"
        assert "hello logs" in (job.stdout() or "")
        assert "to stderr: hello logs" in (job.stderr() or "")

    @needs("own_logs", "live_logs")
    def test_logs_while_it_runs(self, executor: jobsub.AutoExecutor) -> None:
        """``stdout()`` shows what a task printed while it still runs (an object store: every few seconds)."""
        job = executor.submit(tasks.print_then_sleep, "started", 8)
        deadline = time.monotonic() + 60
        while "started" not in (job.stdout() or ""):
            assert time.monotonic() < deadline, "nothing of the running task's output"
            time.sleep(0.2)
        assert job.state in ("RUNNING", "PENDING") or job.state == "RUNNING"
        assert job.result(timeout=120) == "done"
        assert "started" in (job.stdout() or "")

    @needs("own_logs")
    def test_task_logging_at_info_is_shown(self, executor: jobsub.AutoExecutor) -> None:
        """A task's own ``logging.info`` records reach its stderr, with level and logger name."""
        job = executor.submit(tasks.log_and_return, "a record")
        assert job.result(timeout=120) == "a record"
        assert "tests.tasks INFO: logged: a record" in (job.stderr() or "")

    def test_job_environment(self, executor: jobsub.AutoExecutor) -> None:
        job = executor.submit(tasks.describe_environment)
        info = job.result(timeout=120)
        assert info["job_id"] == job.job_id
        assert info["global_rank"] == 0 and info["num_tasks"] == 1
        assert info["cluster"] == executor.cluster
        assert Path(info["result_pickle"]) == job.paths.result_pickle

    def test_array_environment(self, executor: jobsub.AutoExecutor) -> None:
        jobs = executor.submit_array([tasks.describe_environment] * 3)
        infos = [j.result(timeout=180) for j in jobs]
        assert [i["array_index"] for i in infos] == [0, 1, 2]
        assert [i["job_id"] for i in infos] == [j.job_id for j in jobs]

    @needs("ranks")
    def test_multi_task_job(self, executor: jobsub.AutoExecutor) -> None:
        executor.update_parameters(tasks_per_node=3)
        job = executor.submit(tasks.describe_environment)
        results = job.results(timeout=180)
        assert sorted(r["global_rank"] for r in results) == [0, 1, 2]
        assert all(r["num_tasks"] == 3 for r in results)
        assert job.task(2).result()["global_rank"] == 2
        assert job.num_tasks == 3

    # -- ends the backend decides: cancel, time limit, memory -------------------------------------
    def test_cancel(self, executor: jobsub.AutoExecutor) -> None:
        job = executor.submit(tasks.sleep_then, 120)
        assert job.cancel()
        with pytest.raises(jobsub.JobCancelledError) as info:
            job.result(timeout=120)
        assert info.value.state is JobState.CANCELLED
        assert job.cancelled()

    @needs("time_limit", "fast_time_limits")
    def test_timeout(self, executor: jobsub.AutoExecutor) -> None:
        executor.update_parameters(timeout_min=0.03)
        job = executor.submit(tasks.sleep_then, 60)
        with pytest.raises(jobsub.JobTimeoutError) as info:
            job.result(timeout=120)
        assert info.value.state is JobState.TIMEOUT
        assert job.state == "TIMEOUT"

    @needs("time_limit", "checkpoint", "fast_time_limits")
    def test_checkpointable_job_is_requeued_after_its_time_limit(self, executor: jobsub.AutoExecutor) -> None:
        """The pre-timeout signal checkpoints the callable; the backend runs the checkpoint again."""
        margin = self.checkpoint_margin_s  # the signal comes at the limit minus at most half of it
        executor.update_parameters(timeout_min=2 * margin / 60, signal_delay_s=math.ceil(margin))
        job = executor.submit(tasks.SlowCounter(), 30)
        assert job.result(timeout=90) == 2  # second attempt, state carried by the checkpoint
        assert job.folder.read_checkpoint(0) is not None

    @needs("memory_limit")
    def test_out_of_memory(self, executor: jobsub.AutoExecutor) -> None:
        executor.update_parameters(mem_gb=0.15)
        under, over = executor.map_array(tasks.hog, [10, 400])
        assert under.result(timeout=120) == 10 * 2**20
        with pytest.raises(jobsub.OutOfMemoryError) as info:
            over.result(timeout=120)
        assert info.value.state is JobState.OUT_OF_MEMORY and over.state == "OUT_OF_MEMORY"

    # -- jobs as arguments ----------------------------------------------------------------------
    def test_job_as_argument_is_a_dependency(self, executor: jobsub.AutoExecutor) -> None:
        first = executor.submit(tasks.add, 1, 2)
        second = executor.submit(tasks.add, first, 10)
        assert second.result(timeout=180) == 13

    def test_jobs_inside_containers_are_dependencies(self, executor: jobsub.AutoExecutor) -> None:
        """Lists, tuples and dicts of jobs stand for their results too (fan-in)."""
        parts = executor.map_array(tasks.add, [1, 2, 3], [10, 20, 30])
        total = executor.submit(tasks.total, [parts[0], (parts[1],)], extra={"x": parts[2]})
        assert total.result(timeout=180) == 66

    def test_failed_dependency_cancels_the_dependent(self, executor: jobsub.AutoExecutor) -> None:
        """The same on every backend: CANCELLED, naming the dependency that failed (never a nested failure)."""
        broken = executor.submit(tasks.fail, "upstream")
        orphan = executor.submit(tasks.add, broken, 1)
        with pytest.raises(jobsub.JobCancelledError, match="dependency failed") as info:
            orphan.result(timeout=120)
        assert broken.job_id in str(info.value) and info.value.state is JobState.CANCELLED
        assert orphan.state == "CANCELLED"

    # -- handles that outlive their process -----------------------------------------------------
    def test_job_pickles_and_reattaches(self, executor: jobsub.AutoExecutor) -> None:
        job = executor.submit(tasks.add, 1, 2)
        clone = pickle.loads(pickle.dumps(job))
        assert clone.result(timeout=120) == 3
        again = jobsub.Job(folder=executor.folder, job_id=job.job_id)
        assert again.result() == 3
        assert again.job_id == job.job_id
        # the guide's spelling: job.paths.folder is a Path, also of a gs:// folder ("gs:/bucket/...")
        (attached,) = jobsub.Job.attach(job.paths.folder)
        assert attached.job_id == job.job_id and attached.result() == 3

    @needs("survives_client")
    def test_reattach_from_new_process(self, executor: jobsub.AutoExecutor, backend_parameters: dict[str, Any]) -> None:
        root = Path(__file__).resolve().parent.parent.parent
        script = textwrap.dedent(
            """
            import sys, jobsub
            from tests import tasks
            ex = jobsub.AutoExecutor(folder=sys.argv[1], cluster=sys.argv[2])
            ex.update_parameters(**eval(sys.argv[3]))
            job = ex.submit(tasks.sleep_then, 1.5, "survived")
            print(job.job_id)
            """
        )
        params = repr(backend_parameters)
        out = subprocess.run(
            [sys.executable, "-c", script, str(executor.folder), self.cluster, params],
            capture_output=True, text=True, check=True, cwd=root,
        )
        job_id = out.stdout.strip().splitlines()[-1]
        # the submitting process has exited; the job must still run and be found again
        job: jobsub.Job[Any] = jobsub.Job(folder=executor.folder, job_id=job_id)
        assert job.result(timeout=180) == "survived"


class BackendSuite(BehaviourSuite, GuaranteesSuite, CacheSuite, ViewsSuite):
    """Every shared suite: what a backend's one test class inherits."""
