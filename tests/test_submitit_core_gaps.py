"""submitit behaviours that real tools and submitit's own tests rely on, which live in jobsub's core.

Each test states the behaviour as submitit has it: debug jobs that run when
waited for, ``local_python``, unprefixed keys, a batch of one, asyncio's
``results_as_completed``, the worker's logging, ``Job.watcher``, submitit's
log names in the folder, and folder modes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import sys
from pathlib import Path

import pytest

import jobsub
from tests import tasks

# -- the debug executor runs a job only when its result is asked ------------------------



def test_debug_job_can_be_cancelled_before_it_runs(tmp_path: Path) -> None:
    ran = tmp_path / "ran"

    def touch() -> int:
        ran.write_text("yes")
        return 42

    job = jobsub.DebugExecutor(tmp_path / "runs").submit(touch)
    assert job.state == "QUEUED"
    assert job.cancel()
    assert job.state == "CANCELLED"
    with pytest.raises(jobsub.UncompletedJobError, match="cancel"):
        job.result()
    assert not ran.exists()



def test_debug_job_runs_when_its_result_is_asked(tmp_path: Path) -> None:
    ran = tmp_path / "ran"

    def touch() -> int:
        ran.write_text("yes")
        return 42

    job = jobsub.DebugExecutor(tmp_path / "runs").submit(touch)
    assert job.state == "QUEUED" and not ran.exists()
    assert job.result() == 42 and ran.exists()
    assert job.state == "COMPLETED"



def test_debug_job_ids_say_debug(tmp_path: Path) -> None:
    job = jobsub.DebugExecutor(tmp_path / "runs").submit(tasks.add, 1, 2)
    assert job.job_id.startswith("DEBUG")
    assert job.result() == 3


# -- local_python / LocalExecutor(python=...) ----------------------------------------------


def _wrapper(tmp_path: Path) -> str:
    script = tmp_path / "python-wrapper"
    script.write_text(f'#!/bin/sh\nJOBSUB_TEST_WRAPPER=yes exec {sys.executable} "$@"\n')
    script.chmod(0o755)
    return str(script)



def test_local_python_starts_the_job(tmp_path: Path) -> None:
    ex = jobsub.AutoExecutor(tmp_path / "runs", cluster="local", local_python=_wrapper(tmp_path))
    assert ex.submit(tasks.getenv, "JOBSUB_TEST_WRAPPER").result() == "yes"



def test_local_executor_python_argument(tmp_path: Path) -> None:
    ex = jobsub.LocalExecutor(tmp_path / "runs", python=_wrapper(tmp_path))
    assert ex.submit(tasks.getenv, "JOBSUB_TEST_WRAPPER").result() == "yes"


# -- AutoExecutor: unprefixed backend keys -----------------------------------------------



def test_unprefixed_backend_key_is_deprecated_not_refused(tmp_path: Path) -> None:
    ex = jobsub.AutoExecutor(tmp_path / "runs", cluster="local")
    with pytest.warns(DeprecationWarning, match="'partition' is deprecated. Use 'slurm_partition'"):
        ex.update_parameters(partition="dev")
    assert ex.submit(tasks.add, 1, 2).result() == 3


# -- batch() of one submission -----------------------------------------------------------



def test_batch_of_one_is_a_plain_job(local_executor: jobsub.AutoExecutor) -> None:
    with local_executor.batch():
        job = local_executor.submit(tasks.add, 1, 2)
    single = local_executor.submit(tasks.add, 1, 2)
    assert job.job_id.count("_") == single.job_id.count("_"), job.job_id
    assert job.result() == 3


# -- awaitable().results_as_completed() ----------------------------------------------------



def test_results_as_completed(local_executor: jobsub.AutoExecutor) -> None:
    job = local_executor.submit(tasks.add, 1, 2)

    async def gather() -> list[int]:
        proxy = job.awaitable()
        return [await result for result in proxy.results_as_completed(poll_interval=0.05)]  # type: ignore[attr-defined]

    assert asyncio.run(gather()) == [3]


# -- the worker leaves the root logger to the job ----------------------------------------


def _log_own_handler() -> str:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("MINE %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("user.code").info("hello once")
    return "ok"


def _log_library_info() -> str:
    logging.getLogger("some.library").info("library chatter")
    logging.getLogger("some.library").warning("library alarm")
    return "ok"



def test_a_job_with_its_own_handler_gets_each_record_once(local_executor: jobsub.AutoExecutor) -> None:
    job = local_executor.submit(_log_own_handler)
    assert job.result() == "ok"
    assert (job.stderr() or "").count("hello once") == 1, job.stderr()



def test_library_info_records_stay_quiet(local_executor: jobsub.AutoExecutor) -> None:
    job = local_executor.submit(_log_library_info)
    assert job.result() == "ok"
    err = job.stderr() or ""
    assert "library alarm" in err and "library chatter" not in err, err


# -- Job.watcher -------------------------------------------------------------------------



def test_job_watcher_as_dora_calls_it(local_executor: jobsub.AutoExecutor) -> None:
    job = local_executor.submit(tasks.add, 1, 2)
    jobsub.SlurmJob.watcher.update()  # type: ignore[attr-defined]
    assert job.result() == 3
    assert job.watcher.get_state(job.job_id, "standard") == "COMPLETED"  # type: ignore[attr-defined]
    assert job.watcher.is_done(job.job_id, "force")  # type: ignore[attr-defined]


# -- submitit's file names in the folder -----------------------------------------------------



def test_submitit_log_names_in_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "runs"
    ex = jobsub.AutoExecutor(folder, cluster="local")
    job = ex.submit(tasks.print_and_return, "to the log")
    assert job.result() == "to the log"
    assert (folder / f"{job.job_id}_0_log.out").read_text() == job.stdout()
    assert (folder / f"{job.job_id}_0_log.err").read_text() == job.stderr()


# -- folder modes ------------------------------------------------------------------------------



def test_job_folder_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        job = jobsub.AutoExecutor(tmp_path / "runs", cluster="local").submit(tasks.add, 1, 2)
        assert job.result() == 3
    finally:
        os.umask(old)
    folder = job.paths.folder
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    for unpickled in (folder / "call.pkl", *folder.glob("args/*.pkl")):
        assert stat.S_IMODE(unpickled.stat().st_mode) & 0o022 == 0, unpickled  # only the owner writes
