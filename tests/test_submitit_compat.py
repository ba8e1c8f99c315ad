"""submitit's documented usage runs with only the import changed (`import jobsub as submitit`).

Each test follows one section of submitit's docs (README, docs/examples.md,
docs/checkpointing.md) on the local executor.
"""

from __future__ import annotations

import asyncio
import operator
import random
import signal
import time
from pathlib import Path

import pytest

import jobsub as submitit
from tests import tasks


@pytest.fixture
def log_folder(tmp_path: Path) -> str:
    return str(tmp_path / "log_test" / "%j")


def test_explained_add_example(log_folder: str) -> None:
    executor = submitit.AutoExecutor(folder=log_folder, cluster="local")
    executor.update_parameters(timeout_min=4, slurm_partition="dev")
    job = executor.submit(tasks.add, 5, 7)
    assert isinstance(job.job_id, str)
    assert job.result() == 12
    assert job.get_info()["State"] == "COMPLETED"


def test_job_arrays_and_batch(log_folder: str) -> None:
    executor = submitit.AutoExecutor(folder=log_folder, cluster="local")
    executor.update_parameters(slurm_array_parallelism=2)
    jobs = executor.map_array(tasks.add, [1, 2, 3, 4], [10, 20, 30, 40])
    assert [j.result() for j in jobs] == [11, 22, 33, 44]
    batched = []
    with executor.batch():
        for arg in range(3):
            batched.append(executor.submit(tasks.add, arg, arg))
    assert [j.result() for j in batched] == [0, 2, 4]


def test_concurrent_jobs(log_folder: str) -> None:
    executor = submitit.AutoExecutor(folder=log_folder, cluster="local")
    executor.update_parameters(timeout_min=1, slurm_partition="dev")
    jobs = [executor.submit(time.sleep, k / 10) for k in range(1, 6)]
    time.sleep(0.05)
    assert 0 <= sum(job.done() for job in jobs) <= 5
    assert [job.result() for job in jobs] == [None] * 5


def test_asyncio(log_folder: str) -> None:
    executor = submitit.AutoExecutor(folder=log_folder, cluster="local")

    async def main() -> list[int]:
        job = executor.submit(operator.mul, 10, 2)
        first = await job.awaitable().result()
        jobs = [executor.submit(operator.mul, k, random.randint(1, 4)) for k in range(1, 5)]
        rest = [await aws for aws in asyncio.as_completed([j.awaitable().result() for j in jobs])]
        return [first, *rest]

    results = asyncio.run(main())
    assert results[0] == 20 and len(results) == 5


def test_errors(log_folder: str) -> None:
    executor = submitit.AutoExecutor(folder=log_folder, cluster="local")
    job = executor.submit(operator.truediv, 1, 0)
    with pytest.raises(submitit.core.utils.FailedJobError, match="ZeroDivisionError"):
        job.result()
    assert isinstance(job.stderr(), str)


def test_command_function_in_cluster(log_folder: str) -> None:
    function = submitit.helpers.CommandFunction(["which", "python3"], verbose=False)
    executor = submitit.AutoExecutor(folder=log_folder, cluster="local")
    assert executor.submit(function).result().endswith("python3")


def test_multi_task_jobs(log_folder: str) -> None:
    executor = submitit.AutoExecutor(folder=log_folder, cluster="local")
    executor.update_parameters(tasks_per_node=3, nodes=1, timeout_min=1, slurm_partition="dev")
    job = executor.submit(tasks.add, 5, 7)
    assert job.result() == [12, 12, 12]
    assert job.task(2).result() == 12
    assert job.results() == [12, 12, 12]


def test_function_sequence_checkpointable(log_folder: str) -> None:
    executor = submitit.AutoExecutor(folder=log_folder, cluster="local", slurm_max_num_timeout=3)
    func = submitit.helpers.FunctionSequence()
    func.add(tasks.add, 1, 2)
    func.add(tasks.add, 3, 4)
    assert executor.submit(func).result() == [3, 7]


def test_slurm_keys_are_accepted_off_slurm(log_folder: str) -> None:
    executor = submitit.AutoExecutor(folder=log_folder, cluster="local")
    executor.update_parameters(
        slurm_partition="dev", slurm_mem_per_cpu=None, slurm_gpus_per_task=None,
        slurm_signal_delay_s=None, slurm_comment=None, slurm_additional_parameters=None,
    )
    assert executor.submit(tasks.add, 1, 1).result() == 2


def test_smaller_public_names(tmp_path: Path) -> None:
    """Names scripts reach for beyond the docs: pickle helpers, run_cmd, job_class, JobEnvironment.name."""
    from jobsub.core import utils
    from jobsub.core.job_environment import DelayedSubmission, JobPaths

    target = tmp_path / "saved.pkl"
    utils.cloudpickle_dump(lambda x: x + 1, target)
    assert utils.pickle_load(target)(1) == 2 and not list(tmp_path.glob("*.save_tmp"))
    with pytest.raises(ZeroDivisionError), utils.temporary_save_path(target) as temporary:
        temporary.write_text("half written")
        1 / 0  # noqa: B018 - the block fails: the old file stays
    assert utils.pickle_load(target)(1) == 2
    assert submitit.helpers.run_cmd(["echo", " hi "]) == "hi"
    assert submitit.AutoExecutor.job_class is submitit.Job
    assert DelayedSubmission is submitit.helpers.DelayedSubmission and JobPaths is submitit.core.utils.JobPaths
    executor = submitit.AutoExecutor(folder=str(tmp_path / "env"), cluster="local")
    name, signal_number = executor.submit(tasks.environment_name).result()
    assert name == "local" and signal_number == int(signal.SIGUSR2)
