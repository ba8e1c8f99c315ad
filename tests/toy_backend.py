"""A toy cloud backend built only from the kit (jobsub.cloud) over a fake scheduler: proof that a
new backend writes only what is its own.  docs/adding-a-backend.md walks through it.

Its own: parameters, the request (the worker's command, its environment), the state table, its
SDK (``FakeCloud``, from tests/fake_cloud.py) behind a gateway.  The kit's: pacing, retries and
error mapping (``Gateway``), states at O(arrays) cost, a job the scheduler forgot and one that
waits too long (``ArrayTracker``).  Logs are the folder's (the ``Backend`` default).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from jobsub.backends.base import Backend, Capabilities, Launch, register_backend
from jobsub.cloud.arrays import ArrayTracker, Parent, PendingTooLong
from jobsub.cloud.gateway import Gateway
from jobsub.errors import BackendError
from jobsub.folder import JobFolder
from jobsub.parameters import Resolved
from jobsub.states import JobState, Status
from tests.fake_cloud import FakeCloud


@dataclass(kw_only=True)
class ToyParameters:
    """``toy_<key>`` keys."""

    pending_timeout_min: float | None = None
    """Cancel a job none of whose tasks started after this long (the scheduler's reason is kept)."""


class ToyGateway(Gateway):
    """The fake cloud's "SDK" behind the kit's door: paced, counted, its errors mapped."""

    provider = "toy"

    def __init__(self, home: str) -> None:
        super().__init__()
        self.home = home

    def make_client(self, service: str) -> FakeCloud:
        return FakeCloud(self.home)

    def transient(self, exc: BaseException) -> float | None:
        return None  # nothing of a directory is worth another try

    def map_error(self, exc: BaseException, action: str, *, submitting: bool) -> Exception | None:
        return BackendError(f"{action}: the toy cloud failed: {exc}") if isinstance(exc, OSError) else None


_COUNTED = {"QUEUED": JobState.PENDING, "RUNNING": JobState.RUNNING, "SUCCEEDED": JobState.COMPLETED}


class ToyScheduler:
    """What the fake cloud answers the array tracker."""

    label = "the toy cloud"
    describe_max = 50
    list_page = 100

    def __init__(self, gateway: ToyGateway) -> None:
        self.gateway = gateway

    def describe(self, parents: Sequence[str]) -> dict[str, Parent]:
        found = {}
        for job_id, job in self.gateway.call("", "describe", ids=list(parents)).items():
            tasks = job["tasks"]
            counts: dict[JobState, int] = {}
            for state in tasks:
                counted = _COUNTED.get(state, JobState.FAILED)
                counts[counted] = counts.get(counted, 0) + 1
            waiting = all(s == "QUEUED" for s in tasks)
            queued = "no runner has started yet" if waiting else None
            cancelled = "cancelled" if "CANCELLED" in tasks else ""
            found[job_id] = Parent(job_id, tasks, job["array"], counts, job["size"], queued=queued, cancelled=cancelled)
        return found

    def children(self, parent: Parent, states: Collection[JobState]) -> dict[int, Any]:
        return {i: s for i, s in enumerate(parent.native) if _COUNTED.get(s, JobState.FAILED) in states}

    def status(self, native: Any, parent: Parent) -> Status:
        state = native[0] if isinstance(native, list) else native  # a plain job: its one task
        if state == "CANCELLED":
            return Status(JobState.CANCELLED, "cancelled by the user")
        if state.startswith("FAILED"):
            return Status(JobState.FAILED, f"exit code {state.split()[1]}")
        return Status(_COUNTED[state])

    def cancel(self, parent: Parent, reason: str) -> None:
        self.gateway.call("", "cancel", job_id=parent.id)


class ToyBackend(Backend):
    """Runs tasks on the toy cloud (``home``: where its records live; one per process by default)."""

    name = "toy"
    Parameters = ToyParameters
    capabilities = Capabilities(
        time_limit=False, memory_limit=False, ranks=False, checkpoint=False, survives_client=False, one_task_per_job=True,
    )
    task_env: ClassVar[Mapping[str, str]] = {"index": "TOY_TASK_INDEX", "job_id": "TOY_JOB_ID", "array_job_id": "TOY_ARRAY_JOB_ID"}
    poll_interval_s = 0.2

    def __init__(self, root: str, home: str | None = None) -> None:
        super().__init__(root)
        self.home = home or os.path.join(tempfile.gettempdir(), f"jobsub-toy-cloud-{os.getuid()}")
        self.api = ToyGateway(self.home)
        stuck = PendingTooLong(lambda: self.storage, "the toy cloud", "pending_timeout_min", "toy_pending_timeout_min")
        self.tracker = ArrayTracker(ToyScheduler(self.api), lambda: self.storage, pending=stuck)

    def config(self) -> dict[str, Any]:
        return {"root": self.root, "home": self.home}

    def submit(self, launch: Launch, n_tasks: int, params: Resolved, folder: JobFolder, *, array: bool) -> str:
        passed = {n: os.environ[n] for n in params.common.pass_env if n in os.environ}
        basics = {n: os.environ[n] for n in ("PATH", "PYTHONPATH", "HOME") if n in os.environ}
        job_id: str = self.api.call(
            "", "submit", what=f"submitting {launch.tag}", submitting=True, name=launch.tag,
            command=launch.command(sys.executable), size=n_tasks, array=array,
            env={**basics, **launch.env, **passed}, cwd=launch.cwd or os.getcwd(),
        )
        self.tracker.submitted(job_id, array=array, pending_limit_min=params.specific.pending_timeout_min)
        return job_id

    def states(self, backend_ids: Sequence[str]) -> dict[str, Status]:
        return self.tracker.states(backend_ids)

    def cancel(self, backend_ids: Sequence[str]) -> None:
        self.tracker.cancel(backend_ids, lambda parent, index: self.api.call("", "cancel", job_id=parent, index=index))

    def find_submitted(self, launch: Launch, folder: JobFolder) -> str | None:
        found: str | None = self.api.call("", "find", name=launch.tag)
        return found


register_backend("toy", "tests.toy_backend:ToyBackend")
