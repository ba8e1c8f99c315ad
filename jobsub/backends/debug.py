"""The debug backend: runs jobs in the calling process, when a result is waited for.

Arguments still go through cloudpickle and the worker (so pickling problems
show up here first), but the function runs in this process, so breakpoints
work, and ``result()`` raises the function's own exception rather than a
``FailedJobError``.  Asking a job's state never runs it: a job stays QUEUED
(and can be cancelled) until ``result()``, ``wait()`` or ``exception()``
asks for it; the debug jobs it takes as arguments run first.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

from .. import worker
from ..folder import JobFolder
from ..parameters import Resolved
from ..states import JobState, Status
from ._exits import DEPENDENCY_FAILED
from .base import Backend, Capabilities, Launch

__all__ = ["DebugBackend"]


@contextlib.contextmanager
def _task_environment(variables: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(variables)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class DebugBackend(Backend):
    name = "debug"
    poll_interval_s = 0.0
    result_grace_s = 0.0
    capabilities = Capabilities(
        time_limit=False, memory_limit=False, ranks=False, checkpoint=False, own_logs=False,
        survives_client=False, isolated=False, reraise_original=True, object_store_folders=True,
    )

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self._pending: dict[str, tuple[JobFolder, int, int, bool, dict[str, str]]] = {}
        self._states: dict[str, Status] = {}
        self._count = 0

    def submit(self, launch: Launch, n_tasks: int, params: Resolved, folder: JobFolder, *, array: bool) -> str:
        base = f"DEBUG_{folder.key}"  # as submitit's debug ids say: never taken for a scheduler's
        for i in range(n_tasks):
            job_id = f"{base}_{i}" if array else base
            self._pending[job_id] = (folder, i, params.common.tasks_per_node, array, dict(launch.env))
            self._states[job_id] = Status(JobState.QUEUED, "runs in this process when its result is waited for")
        return base

    def planned_id(self, launch: Launch, folder: JobFolder) -> str | None:
        return f"DEBUG_{folder.key}"

    def states(self, backend_ids: Sequence[str]) -> dict[str, Status]:
        return {i: self._states.get(i, Status(JobState.LOST, "unknown to this process")) for i in backend_ids}

    def waits_natively(self, upstream: Backend, job_id: str) -> bool:
        """Its own pending jobs run first when a job is waited for; anything else is held."""
        return upstream is self

    def on_wait(self, backend_id: str) -> None:
        """Someone waits for this job: run it now (and the debug jobs it takes as arguments first)."""
        if backend_id in self._pending:
            self._run(backend_id)

    def _run(self, backend_id: str) -> None:
        folder, index, ranks, array, env = self._pending.pop(backend_id)
        for refs in folder.read_meta().get("waits_for", {}).get(str(index), []):
            upstream_url, upstream_index, _ = refs
            for pending_id, (upstream, i, *_rest) in list(self._pending.items()):
                if upstream.url == upstream_url and i == upstream_index:
                    self._run(pending_id)
        self._states[backend_id] = Status(JobState.RUNNING)
        codes = []
        for rank in range(ranks):
            base = backend_id.rsplit("_", 1)[0] if array else backend_id
            variables = {
                **env,
                "JOBSUB_ARRAY_TASK_ID": str(index),
                "JOBSUB_GLOBAL_RANK": str(rank),
                "JOBSUB_LOCAL_RANK": str(rank),
                "JOBSUB_NUM_TASKS": str(ranks),
                "JOBSUB_RAW_JOB_ID": backend_id,
                "JOBSUB_ARRAY_JOB_ID": base if array else "",
            }
            with _task_environment(variables):
                worker.export_environment(folder, self.name, {}, 0)
                # the caller gets the function's own exception: its traceback is not also logged
                codes.append(worker.run_task(folder, index, rank, report_failure=False))
        if worker.DEPENDENCY_FAILED_EXIT_CODE in codes:
            self._states[backend_id] = DEPENDENCY_FAILED
        else:
            self._states[backend_id] = Status(JobState.FAILED if any(codes) else JobState.COMPLETED)

    def cancel(self, backend_ids: Sequence[str]) -> None:
        for backend_id in backend_ids:
            for task_id in [t for t in self._pending if t == backend_id or t.startswith(backend_id + "_")]:
                del self._pending[task_id]
                self._states[task_id] = Status(JobState.CANCELLED, "it was cancelled before it ran")
