"""The local backend: jobs as forked children of a warm, detached fork server.

The client part here only talks to the server (``server``) over a Unix
socket and reads states from the job folder's ``run/`` and ``exit/``
markers, so asking the state of 10,000 jobs is file reads, not requests.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import BackendError, InvalidParameterError
from ...folder import JobFolder
from ...parameters import Resolved
from ...states import JobState, Status
from ...storage import open_storage
from .._daemon import request, spawn_detached
from ..base import Backend, Launch

__all__ = ["LocalBackend", "LocalParameters"]


@dataclass(kw_only=True)
class LocalParameters:
    """Keys of the local backend (``local_<key>`` with AutoExecutor)."""

    visible_gpus: list[int] = field(default_factory=list)
    """GPU ids this machine may hand out; with ``gpus_per_node`` set, CUDA_VISIBLE_DEVICES is set."""


def _server_dir() -> Path:
    base = os.environ.get("JOBSUB_LOCAL_DIR") or f"/tmp/jobsub-{os.getuid()}"
    path = Path(base)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _server_socket() -> str:
    """One server per user, Python and jobsub code: a changed jobsub gets a fresh server."""
    package = Path(__file__).resolve().parent.parent
    newest = max(p.stat().st_mtime_ns for p in package.rglob("*.py"))
    digest = hashlib.sha1(f"{sys.executable}|{package}|{newest}".encode()).hexdigest()[:12]
    return str(_server_dir() / f"local-{digest}.sock")


class LocalBackend(Backend):
    """Runs jobs on this machine, isolated in their own processes."""

    name = "local"
    Parameters = LocalParameters
    poll_interval_s = 0.1
    result_check_s = 0.02  # results land on a local disk: a stat costs microseconds
    result_grace_s = 0.0  # same machine: results are on disk before the process exits

    def __init__(self, root: str, server: str | None = None) -> None:
        """``server``: the socket of the fork server that runs the jobs (default: this Python's).

        It is stored with each submission, so a process started by another
        interpreter (the ``jobsub`` command, ``python`` vs ``python3``) talks to
        the server that holds the jobs rather than starting one of its own.
        """
        super().__init__(root)
        self._storage = open_storage(root)
        self._sock_path = server or _server_socket()
        self._lock = threading.Lock()

    def config(self) -> dict[str, Any]:
        return {"root": self.root, "server": self._sock_path}

    # -- talking to the server ------------------------------------------------------------
    def _request(self, req: dict[str, Any]) -> dict[str, Any]:
        """One request, one short-lived connection (a Unix socket connect costs microseconds)."""
        answer = request(self._sock_path, req, self._start_server, what="local job server")
        if not answer.get("ok"):
            raise BackendError(f"local job server: {answer.get('error')}")
        return answer

    def _start_server(self) -> None:
        with self._lock:
            spawn_detached("jobsub.backends.local.server", [self._sock_path], self._sock_path + ".log")

    def _server_alive(self) -> bool:
        try:
            pid = int(Path(self._sock_path + ".pid").read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        return True

    # -- the four primitives --------------------------------------------------------------
    def submit(self, launch: Launch, n_tasks: int, params: Resolved, folder: JobFolder, *, array: bool) -> str:
        common = params.common
        if common.nodes > 1:
            raise InvalidParameterError("the local backend runs on one node: use nodes=1")
        env = dict(os.environ)
        env.update(launch.env)
        gpus = params.specific.visible_gpus
        if common.gpus_per_node:
            if gpus and common.gpus_per_node > len(gpus):
                raise InvalidParameterError(f"{common.gpus_per_node} GPUs asked, visible_gpus has {gpus}")
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus[: common.gpus_per_node]))
        self._request(
            {
                "op": "submit",
                "id": folder.key,
                "folder": folder.url,
                "argv": launch.module_args()[2:],
                "env": env,
                "cwd": os.getcwd(),
                "sys_path": [p or os.getcwd() for p in sys.path],
                "n": n_tasks,
                "ranks": common.tasks_per_node,
                "array": array,
                "offset": launch.offset,
                "timeout_s": None if common.timeout_min is None else common.timeout_min * 60,
                "signal_delay_s": common.signal_delay_s,
                "parallelism": common.array_parallelism,
                "setup": common.setup,
                "mem_limit": int(common.mem_gb * 2**30) if common.mem_gb else None,
            }
        )
        return folder.key

    def states(self, backend_ids: Sequence[str]) -> dict[str, Status]:
        server_alive: bool | None = None
        answer = {}
        for backend_id in backend_ids:
            key, sep, index = backend_id.partition("_")
            folder = JobFolder(self._storage, key)
            name = index if sep else "0"
            end = folder.read_marker("exit", f"{name}.json")
            if end is not None:
                info = json.loads(end)
                answer[backend_id] = Status(JobState(info["state"]), info["reason"])
                continue
            run = folder.read_marker("run", f"{name}.json")
            if run is not None and any(_alive(pid) for pid in json.loads(run)["pids"]):
                answer[backend_id] = Status(JobState.RUNNING)
                continue
            if server_alive is None:
                server_alive = self._server_alive()
            if server_alive:
                # not started yet, or just ended and its exit marker is being written
                answer[backend_id] = Status(JobState.RUNNING if run else JobState.PENDING)
            else:
                answer[backend_id] = Status(JobState.LOST, "the local job server is not running")
        return answer

    def cancel(self, backend_ids: Sequence[str]) -> None:
        try:
            unknown = self._request({"op": "cancel", "ids": list(backend_ids)}).get("unknown", [])
        except (OSError, BackendError):
            unknown = list(backend_ids)
        # no server, or one that does not hold them (restarted): kill what the run markers name
        # and record the cancellation ourselves, unless the job has ended already
        for backend_id in unknown:
            key, sep, index = backend_id.partition("_")
            folder = JobFolder(self._storage, key)
            name = index if sep else "0"
            if folder.read_marker("exit", f"{name}.json") is not None:
                continue
            run = folder.read_marker("run", f"{name}.json")
            for pid in json.loads(run)["pids"] if run else []:
                with contextlib.suppress(OSError):
                    os.killpg(pid, 15)
            folder.write_exit(name, "CANCELLED", "cancelled by the user")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (dead, not yet reaped by its parent) still answers kill(0)
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
