"""``JobEnvironment``: what a running job knows about itself, on every backend.

The worker exports canonical ``JOBSUB_*`` variables before calling the user's
function (see ``jobsub.worker``), so this class reads only those and never a
backend's own variables.
"""

from __future__ import annotations

import os
import signal
import socket

from .folder import JobFolder, JobPaths

__all__ = ["JobEnvironment"]


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value else default


class JobEnvironment:
    """Facts about the current job; only usable inside a job.

    Raises:
        RuntimeError: outside a jobsub job.
    """

    def __init__(self) -> None:
        if "JOBSUB_FOLDER" not in os.environ:
            raise RuntimeError(
                "JobEnvironment is only available inside a job started by jobsub "
                "(JOBSUB_FOLDER is not set)"
            )
        self.cluster = os.environ.get("JOBSUB_BACKEND", "local")
        self.name = self.cluster
        """The backend's name (submitit's ``JobEnvironment.name``: "slurm", "local", ...)."""
        self.USR_SIG = getattr(signal, "SIG" + os.environ.get("JOBSUB_PREEMPT_SIGNAL", "USR2"))
        """The signal that asks a checkpointable job to checkpoint (submitit's name)."""

    def activated(self) -> bool:
        return "JOBSUB_FOLDER" in os.environ

    @property
    def job_id(self) -> str:
        """The task's id: ``<array id>_<index>`` for array tasks, else the job id."""
        return os.environ.get("JOBSUB_JOB_ID", "")

    @property
    def raw_job_id(self) -> str:
        return os.environ.get("JOBSUB_RAW_JOB_ID", "") or self.job_id

    @property
    def array_job_id(self) -> str | None:
        return os.environ.get("JOBSUB_ARRAY_JOB_ID") or None

    @property
    def array_task_id(self) -> str | None:
        return os.environ.get("JOBSUB_ARRAY_TASK_ID") if self.array_job_id else None

    @property
    def array_index(self) -> int:
        """Index of this task in its ``map_array``/``batch`` submission (0 for ``submit``)."""
        return _int("JOBSUB_ARRAY_TASK_ID", 0)

    @property
    def num_tasks(self) -> int:
        """Number of ranks of this job (``tasks_per_node * nodes``)."""
        return _int("JOBSUB_NUM_TASKS", 1)

    @property
    def num_nodes(self) -> int:
        return _int("JOBSUB_NUM_NODES", 1)

    @property
    def node(self) -> int:
        return _int("JOBSUB_NODE", 0)

    @property
    def global_rank(self) -> int:
        return _int("JOBSUB_GLOBAL_RANK", 0)

    @property
    def local_rank(self) -> int:
        return _int("JOBSUB_LOCAL_RANK", 0)

    @property
    def hostname(self) -> str:
        return socket.gethostname()

    @property
    def hostnames(self) -> list[str]:
        return [self.hostname]

    @property
    def paths(self) -> JobPaths:
        """Paths of this task's files (submitit's ``JobEnvironment().paths``)."""
        return JobFolder.from_url(os.environ["JOBSUB_FOLDER"]).paths(self.array_index, self.global_rank)

    def __repr__(self) -> str:
        per_node = max(1, self.num_tasks // max(1, self.num_nodes))
        return (
            f"JobEnvironment(job_id={self.job_id}, hostname={self.hostname}, "
            f"local_rank={self.local_rank}({per_node}), node={self.node}({self.num_nodes}), "
            f"global_rank={self.global_rank}({self.num_tasks}))"
        )
