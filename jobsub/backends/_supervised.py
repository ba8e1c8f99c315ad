"""The client half of the supervised backends (local, Docker), and who supervises a submission.

::

    SupervisedBackend.states(ids): exit records (ONE listing per submission), then ONE request
        to the supervisor for the rest; a submission no supervisor holds (its daemon died) is
        adopted, rebuilt from its spec and run/exit records: nothing is lost
    SupervisedBackend.cancel(ids): ONE request; a task no supervisor holds has its cancellation
        recorded first, then what its run record names is killed
    claim(url) / is_claimed(url): a lock per submission in the runtime dir, held by the one
        supervisor that runs it (_supervisor.Supervisor, the server half)

Kept apart from the server half so that a client imports only what it uses.
"""

from __future__ import annotations

import fcntl
import functools
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import BackendError
from ..folder import JobFolder
from ..runtime import digest, runtime_dir
from ..states import JobState, Status
from ..storage import store_environment
from .base import Backend, Launch

__all__ = [
    "SupervisedBackend", "cancel_targets", "cancel_unsupervised", "claim", "is_claimed", "states_from_records",
    "task_name",
]


# -- who supervises a submission --------------------------------------------------------------
@functools.cache
def _locks_dir() -> str:
    return str(runtime_dir("locks"))


def _lock_path(url: str) -> str:
    return os.path.join(_locks_dir(), f"{digest(url)}.lock")


def claim(url: str) -> Any:
    """Hold the submission at ``url`` (an open, locked file), or None if another supervisor does."""
    lock = open(_lock_path(url), "a")  # noqa: SIM115 - held while the submission is supervised
    for _ in range(20):
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            time.sleep(0.01)  # a client probing the lock holds it for microseconds
    lock.close()
    return None


def is_claimed(url: str) -> bool:
    """True if some supervisor holds the submission."""
    with open(_lock_path(url), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
        return False


# -- the client side ------------------------------------------------------------------------------------
class SupervisedBackend(Backend):
    """The client half both supervised backends share: states, cancel, finding a submission.

    A subclass says how to talk to its supervisor (``_request``), how to hand
    it a submission (``_adopt``) and how to stop what a run record names
    when no supervisor holds the task (``_kill_recorded``).
    """

    kind: str = ""
    """The supervisor's kind: its spec is ``<folder>/<kind>/spec.json``."""
    records_cancel = True  # the supervisor (or cancel_unsupervised) writes it, then kills
    storage: Any

    def _request(self, req: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _adopt(self, folder: JobFolder) -> None:
        raise NotImplementedError

    def _kill_recorded(self, run: dict[str, Any]) -> None:
        raise NotImplementedError

    def _hand_over(self, folder: JobFolder, env: dict[str, str], **extra: Any) -> dict[str, Any]:
        """Ask the supervisor to adopt ``folder``: ``env`` is what its tasks take from this process's
        environment; what the stores' SDKs read from it (credentials, endpoints, profile) comes
        along, so that the supervisor reaches the folders as this process does, never with the
        environment it was started in.  Both travel over the socket, never into the folder."""
        return self._request(
            {"op": "adopt", "folder": folder.url, "env": env, "store_env": store_environment(), **extra}
        )

    def end_recorded(self, backend_id: str, folder: JobFolder) -> bool:
        """The supervisor writes ``exit/<name>.json`` just after the task's result: is it there?"""
        return folder.read_exit(task_name(backend_id)[1] or "0") is not None

    def states(self, backend_ids: Sequence[str]) -> dict[str, Status]:
        """Ended tasks from their exit records (one listing per submission), the rest from ONE request.

        A submission no supervisor holds (its daemon died) is adopted by ours.
        """
        def ask(tasks: dict[str, list[str]]) -> dict[str, Any]:
            told: dict[str, Any] = self._request({"op": "states", "tasks": tasks})["states"]
            return told

        answer, orphans = states_from_records(self.storage, backend_ids, ask)
        for folder in orphans:
            if not is_claimed(folder.url):
                self._adopt(folder)
        return answer

    def waits_natively(self, upstream: Backend, job_id: str) -> bool:
        """A supervisor holds a task until its upstreams have a result or an exit record, which
        every supervised backend writes (local and Docker wait for each other's jobs)."""
        return isinstance(upstream, SupervisedBackend)

    def planned_id(self, launch: Launch, folder: JobFolder) -> str | None:
        return folder.key

    def find_submitted(self, launch: Launch, folder: JobFolder) -> str | None:
        """A submission whose spec was written is this backend's: a supervisor runs it (adopting it)."""
        return folder.key if folder.read_backend_file(self.kind, "spec.json") is not None else None

    def cancel(self, backend_ids: Sequence[str]) -> None:
        targets = cancel_targets(self.storage, backend_ids)
        try:
            answer = self._request({"op": "cancel", "tasks": [[f.url, name] for f, name in targets]})
            unknown = {(url, name) for url, name in answer.get("unknown", [])}
        except BackendError:
            unknown = {(f.url, name) for f, name in targets}
        for folder, name in targets:
            if (folder.url, name) in unknown:  # no supervisor holds it: record the cancellation, then kill
                cancel_unsupervised(folder, name, self._kill_recorded)


def task_name(backend_id: str) -> tuple[str, str | None]:
    """``key_7`` -> (key, "7"); ``key`` -> (key, None): a submission's own id."""
    key, sep, index = backend_id.partition("_")
    return key, index if sep else None


def states_from_records(
    storage: Any, backend_ids: Iterable[str], ask: Any
) -> tuple[dict[str, Status], list[JobFolder]]:
    """States of supervised tasks: exit records first, then ONE request for the rest.

    ``ask(tasks)`` sends ``{"op": "states"}`` to the backend's supervisor.
    Returns the states and the folders that no supervisor holds (to adopt).
    """
    by_key: dict[str, list[tuple[str, str]]] = {}
    for backend_id in backend_ids:
        key, name = task_name(backend_id)
        by_key.setdefault(key, []).append((backend_id, name or "0"))
    answer: dict[str, Status] = {}
    unknown: dict[str, list[tuple[str, str]]] = {}
    folders: dict[str, JobFolder] = {}
    for key, tasks in by_key.items():
        folder = JobFolder(storage, key)
        folders[folder.url] = folder
        ended = folder.ended()
        for backend_id, name in tasks:
            if name in ended:
                record = folder.read_exit(name) or {"state": "FAILED", "reason": "its exit record vanished"}
                answer[backend_id] = Status(JobState(record["state"]), record.get("reason", ""))
            else:
                unknown.setdefault(folder.url, []).append((backend_id, name))
    if not unknown:
        return answer, []
    told = ask({url: [name for _, name in tasks] for url, tasks in unknown.items()})
    orphans = []
    for url, tasks in unknown.items():
        known = told.get(url)
        if known is not None:
            for backend_id, name in tasks:
                state, reason = known.get(name, ["PENDING", ""])
                answer[backend_id] = Status(JobState(state), reason)
            continue
        folder = folders[url]
        if not folder.exists():
            for backend_id, _ in tasks:
                answer[backend_id] = Status(JobState.LOST, f"its job folder {url} was deleted before it ended")
            continue
        started = folder.started()
        for backend_id, name in tasks:
            answer[backend_id] = Status(JobState.RUNNING if name in started else JobState.PENDING)
        orphans.append(folder)
    return answer, orphans


def cancel_targets(storage: Any, backend_ids: Sequence[str]) -> list[tuple[JobFolder, str | None]]:
    """(folder, task name) to cancel; the name is None for an array's own id (every task)."""
    targets: list[tuple[JobFolder, str | None]] = []
    for backend_id in backend_ids:
        key, name = task_name(backend_id)
        folder = JobFolder(storage, key)
        if name is None and not folder.is_array():
            name = "0"  # a plain job's id is its submission's
        targets.append((folder, name))
    return targets


def cancel_unsupervised(folder: JobFolder, name: str | None, kill: Any) -> None:
    """Cancel tasks no supervisor holds: record the cancellation first, then kill what runs.

    ``kill(run_record)`` stops what a task's run record names (pids, containers).
    """
    for each in [name] if name is not None else [str(i) for i in range(folder.task_count())]:
        if folder.write_exit(each, "CANCELLED", "cancelled by the user"):
            run = folder.read_run(each)
            if run is not None and "damaged" not in run:
                kill(run)
