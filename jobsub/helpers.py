"""submitit's helpers: checkpointing, commands as functions, waiting for and watching many jobs, code snapshots."""

from __future__ import annotations

import collections
import contextlib
import datetime
import functools
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Callable, TypeVar

from .calls import DelayedSubmission
from .environment import JobEnvironment
from .errors import FailedJobError
from .job import Job
from .snapshot import RsyncSnapshot

__all__ = [
    "Checkpointable",
    "CommandFunction",
    "DelayedSubmission",
    "FunctionSequence",
    "JobEnvironment",
    "RsyncSnapshot",
    "TorchDistributedEnvironment",
    "as_completed",
    "clean_env",
    "environment_variables",
    "monitor_jobs",
    "run_cmd",
]

R = TypeVar("R")


class Checkpointable:
    """Base class of callables that are requeued, with their state, after a timeout or preemption.

    Before the time limit (or on preemption) the job calls ``checkpoint`` with
    the call's arguments; the ``DelayedSubmission`` it returns is what runs
    when the job restarts.  The default resubmits ``self`` as it is now.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        instance = super().__new__(cls)
        if not callable(instance):
            raise TypeError(f"{cls.__name__} is Checkpointable but has no __call__ method")
        return instance

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        return DelayedSubmission(self, *args, **kwargs)  # type: ignore[arg-type]


class FunctionSequence(Checkpointable):
    """Several calls run in order in one job; calls already done are not redone after a requeue.

    Args:
        verbose: write ``Starting from <done>/<total>`` to stdout when called, so a
            job's stdout shows where a requeued run resumed (the line submitit
            wrote, which scripts grep for). It is output the caller asked for,
            not a diagnostic, so it goes to stdout rather than through logging.
    """

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose
        self.delayed_functions: list[DelayedSubmission] = []

    def add(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.delayed_functions.append(DelayedSubmission(func, *args, **kwargs))

    def __len__(self) -> int:
        return len(self.delayed_functions)

    def __iter__(self) -> Iterator[DelayedSubmission]:
        return iter(self.delayed_functions)

    def __call__(self) -> list[Any]:
        if self.verbose:
            done = sum(f.done() for f in self.delayed_functions)  # computed before a checkpoint
            sys.stdout.write(f"Starting from {done}/{len(self.delayed_functions)}\n")
            sys.stdout.flush()
        return [f.result() for f in self.delayed_functions]


class CommandFunction:
    """A command line as a function: returns its stdout, raises ``FailedJobError`` with its stderr.

    Args:
        command: the command, as a list (no shell).
        verbose: also stream the command's output (to this process's stdout/stderr).
        cwd: working directory.
        env: environment (default: inherited).
    """

    def __init__(
        self,
        command: list[str],
        verbose: bool = True,
        cwd: str | Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        if not isinstance(command, list):
            raise TypeError("CommandFunction takes the command as a list of strings")
        self.command = command
        self.verbose = verbose
        self.cwd = None if cwd is None else str(cwd)
        self.env = env

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        full = [*self.command, *map(str, args), *(f"--{k}={v}" for k, v in kwargs.items())]
        proc = subprocess.run(full, capture_output=True, text=True, cwd=self.cwd, env=self.env, check=False)
        if self.verbose:
            import sys

            sys.stdout.write(proc.stdout)
            sys.stderr.write(proc.stderr)
        if proc.returncode:
            error = subprocess.CalledProcessError(proc.returncode, full, output=proc.stdout, stderr=proc.stderr)
            raise FailedJobError(
                f"command {full} exited with code {proc.returncode}; its stderr:\n{proc.stderr.strip()}"
            ) from error
        return proc.stdout.strip()


def run_cmd(str_args: str | Sequence[str], **kwargs: Any) -> str:
    """Run a command and return its stripped stdout (submitit's helper; ``subprocess.check_output``'s errors)."""
    output: bytes = subprocess.check_output(str_args, **kwargs)
    return output.decode("utf-8").strip()


def as_completed(
    jobs: Sequence[Job[R]], timeout: float | None = None, poll_frequency: float = 0.5, progress: bool | None = None
) -> Iterator[Job[R]]:
    """Yield jobs as they finish (in any state); builtin ``TimeoutError`` after ``timeout`` s.

    ``progress``: a bar with counts by state and failures (``jobsub.progress``); None: only
    where a person watches a wait of more than a few seconds.
    """
    from .progress import as_completed as watched_as_completed

    return watched_as_completed(jobs, timeout, poll_frequency, progress)


StatesReport = Callable[[float, int, "dict[str, set[int]]"], None]
"""``report(start_time, n_jobs, indices_by_state)``: ``indices_by_state`` maps state names
(``"RUNNING"``, ``"TIMEOUT"``, ...) and ``"DONE"`` to the indices of the jobs in them;
``"FAILED"`` holds every job that ended other than COMPLETED."""


def monitor_jobs(
    jobs: Sequence[Job[Any]],
    poll_frequency: float = 30,
    test_mode: bool = False,
    custom_logging: StatesReport | None = None,
    *,
    stream: IO[str] | None = None,
) -> None:
    """Report how ``jobs`` fare every ``poll_frequency`` s until all are done (submitit's helper).

    A report is what this function is for, so the default one is written to
    ``stream`` (stdout) rather than to a logger that may not be configured;
    pass ``custom_logging`` to send it elsewhere.  Unlike submitit, any
    ``poll_frequency`` is allowed: however often this looks, the backend is
    asked at most once per its own poll interval for all jobs together.
    ``test_mode`` skips the forced refresh before each report.
    """
    out = stream or sys.stdout
    if not jobs:
        out.write("There are no jobs to monitor\n")
        return
    arrays = ", ".join(sorted({job.job_id.split("_", 1)[0] for job in jobs}))
    out.write(f"Monitoring {len(jobs)} jobs from job arrays {arrays}\n")
    report = custom_logging or functools.partial(_report_states, out)
    start = time.time()
    while True:
        if not test_mode:
            jobs[0].get_info(mode="force")  # one fresh backend answer, shared by every handle
        by_state: dict[str, set[int]] = collections.defaultdict(set)
        for i, job in enumerate(jobs):
            state = job.state
            by_state[state.upper()].add(i)
            if job.done():
                by_state["DONE"].add(i)
                if state != "COMPLETED":  # timeouts, OOM, cancels... count as failed too
                    by_state["FAILED"].add(i)
        if len(by_state["DONE"]) == len(jobs):
            out.write(f"All jobs finished, jobs with indices {sorted(by_state['FAILED'])} failed\n")
            break
        report(start, len(jobs), by_state)
        time.sleep(poll_frequency)
    out.write(f"Whole process is finished, took {int((time.time() - start) / 60)} minutes\n")
    out.flush()


def _report_states(out: IO[str], start: float, n_jobs: int, by_state: dict[str, set[int]]) -> None:
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    failed = sorted(by_state["FAILED"])
    width = len(str(n_jobs))
    out.write(
        f"[{now}] Launched {int((time.time() - start) / 60)} minutes ago, "
        f"{len(by_state['RUNNING']):{width}}/{n_jobs} jobs running, "
        f"{len(failed):{width}}/{n_jobs} jobs failed, "
        f"{len(by_state['DONE']) - len(failed):{width}}/{n_jobs} jobs done\n"
    )
    if failed:
        out.write(f"[{now}] Failed jobs, indices {failed}\n")
    out.flush()


_CLUSTER_PREFIXES = ("SLURM_", "SLURMD_", "SRUN_", "SBATCH_", "SUBMITIT_", "JOBSUB_")
_DISTRIBUTED = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@contextlib.contextmanager
def clean_env(extra_names: Sequence[str] = ()) -> Iterator[None]:
    """Hide scheduler variables while submitting from inside a job (they would leak into the new job)."""
    hidden = {
        k: os.environ.pop(k)
        for k in list(os.environ)
        if k.startswith(_CLUSTER_PREFIXES) or k in _DISTRIBUTED or k in extra_names
    }
    try:
        yield
    finally:
        os.environ.update(hidden)


@contextlib.contextmanager
def environment_variables(**kwargs: Any) -> Iterator[None]:
    """Set environment variables for the duration of the block."""
    backup = {k: os.environ.get(k) for k in kwargs}
    os.environ.update({k: str(v) for k, v in kwargs.items()})
    try:
        yield
    finally:
        for k, v in backup.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class TorchDistributedEnvironment:
    """The variables ``torch.distributed``'s ``env://`` initialisation reads, from the job's ranks.

    Call ``export()`` at the start of each rank, then
    ``torch.distributed.init_process_group(init_method="env://")``.
    """

    def __init__(self) -> None:
        env = JobEnvironment()
        self.rank = env.global_rank
        self.local_rank = env.local_rank
        self.world_size = env.num_tasks
        self.local_world_size = max(1, env.num_tasks // max(1, env.num_nodes))
        self.master_addr = env.hostnames[0] if env.num_nodes > 1 else "127.0.0.1"
        # the same port on every rank, different for different jobs
        digest = int.from_bytes(hashlib.sha1(env.job_id.encode()).digest()[:4], "big")
        self.master_port = 20000 + digest % 40000

    def export(self, set_cuda_visible_devices: bool = False) -> TorchDistributedEnvironment:
        os.environ.update(
            MASTER_ADDR=self.master_addr,
            MASTER_PORT=str(self.master_port),
            RANK=str(self.rank),
            WORLD_SIZE=str(self.world_size),
            LOCAL_RANK=str(self.local_rank),
            LOCAL_WORLD_SIZE=str(self.local_world_size),
        )
        if set_cuda_visible_devices:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(self.local_rank)
        return self
