"""The local backend: jobs as forked children of a warm, detached fork server (``server``).

The client writes the submission's ``local/spec.json`` (what a task needs:
its environment, working directory, ``sys.path``, limits) and asks the
server to adopt the folder; states come from the folder's exit records
(one listing per submission) and ONE request to the server for the rest.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from ... import trust
from ...errors import BackendError, InvalidParameterError
from ...folder import JobFolder
from ...parameters import Resolved
from ...runtime import daemon_socket
from .._daemon import request, spawn_detached
from .._supervised import SupervisedBackend
from ..base import Capabilities, Launch
from .procs import kill_group

__all__ = ["LocalBackend", "LocalParameters"]


@dataclass(kw_only=True)
class LocalParameters:
    """Keys of the local backend (``local_<key>`` with AutoExecutor)."""

    visible_gpus: list[int] = field(default_factory=list)
    """GPU ids this machine may hand out; with ``gpus_per_node`` set, CUDA_VISIBLE_DEVICES is set."""
    reuse_processes: bool = True
    """Let a process that ran a short task (under a second, returned or raised, no thread or
    child process left) run the next task of the same array instead of a fresh fork: several
    times the throughput of tiny tasks.  Each task keeps its own result, logs, environment, time
    limit and usage record, and a crash takes only its own task down; but module-level state of
    imported modules carries over, as in a process pool.  False: one fresh fork per task."""
    python: str | None = None
    """Shell text that starts the job's interpreter (``"conda run -n env python"``, a wrapper
    script); the job then runs in a fresh interpreter instead of a fork of the warm server."""


class LocalBackend(SupervisedBackend):
    """Runs jobs on this machine, isolated in their own processes."""

    name = kind = "local"
    Parameters = LocalParameters
    capabilities = Capabilities(local_folders=True, object_store_folders=True)
    # results are seen through a listing every 20 ms; the server is asked only to catch ends
    # without a result (a killed task), so a short job never costs a request
    poll_interval_s = 0.25
    result_check_s = 0.02  # results land on a local disk: a stat costs microseconds
    result_grace_s = 0.0  # same machine: results are written before the process exits
    end_record_lag_s = 1.0  # the server records the end a millisecond after the result, unless very busy
    result_parameters = ("python",)

    def __init__(self, root: str, server: str | None = None) -> None:
        """``server``: the socket of the fork server that runs the jobs (default: this Python's).

        It is stored with each submission, so a process started by another
        interpreter (the ``jobsub`` command, ``python`` vs ``python3``) talks to
        the server that holds the jobs rather than starting one of its own.
        """
        super().__init__(root)
        self._sock_path = server or daemon_socket("local")
        self._lock = threading.Lock()

    def config(self) -> dict[str, Any]:
        return {"root": self.root, "server": self._sock_path}

    # -- talking to the server ------------------------------------------------------------
    def _request(self, req: dict[str, Any]) -> dict[str, Any]:
        """One request, one short-lived connection (a Unix socket connect costs microseconds)."""
        answer = request(self._sock_path, req, self._start_server, what="local job server")
        if not answer.get("ok"):
            raise BackendError(f"local job server: {answer.get('error')}; see {self._sock_path}.log")
        return answer

    def _start_server(self) -> None:
        with self._lock:
            spawn_detached("jobsub.backends.local.server", [self._sock_path], self._sock_path + ".log")

    # -- the four primitives --------------------------------------------------------------
    def submit(self, launch: Launch, n_tasks: int, params: Resolved, folder: JobFolder, *, array: bool) -> str:
        common = params.common
        if common.nodes > 1:
            raise InvalidParameterError("the local backend runs on one node: use nodes=1")
        env = trust.without_secrets(dict(launch.env))  # the secrets travel with the request, never in spec.json
        gpus = params.specific.visible_gpus
        if common.gpus_per_node:
            if gpus and common.gpus_per_node > len(gpus):
                raise InvalidParameterError(f"{common.gpus_per_node} GPUs asked, visible_gpus has {gpus}")
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus[: common.gpus_per_node]))
        spec = {
            "n": n_tasks,
            "ranks": common.tasks_per_node,
            "array": array,
            "offset": launch.offset,
            "argv": launch.module_args()[2:],  # after "-m jobsub.worker": the child calls worker.main
            "env": env,  # the job's own variables; the rest of the environment comes with the request
            "cwd": launch.cwd or os.getcwd(),
            "sys_path": list(launch.sys_path) or [p or os.getcwd() for p in sys.path],
            "timeout_s": None if common.timeout_min is None else common.timeout_min * 60,
            "signal_delay_s": common.signal_delay_s,
            "parallelism": common.array_parallelism,
            "setup": common.setup,
            "python": params.specific.python,
            "reuse": params.specific.reuse_processes,
            "mem_limit": int(common.mem_gb * 2**30) if common.mem_gb else None,
            "cpus_per_task": common.cpus_per_task,
        }
        folder.write_backend_json("local", "spec.json", spec)  # for a later adoption
        meta = folder.read_meta()
        self._adopt(folder, fresh={"spec": spec, "waits_for": folder.waits_for(meta)}, meta=meta)
        return folder.key

    def _adopt(
        self, folder: JobFolder, fresh: dict[str, Any] | None = None, meta: dict[str, Any] | None = None
    ) -> None:
        """Hand the submission to the server, with this process's environment for its tasks.

        The environment travels over the socket, never into the folder: it may
        hold credentials and the submission's secrets, and the folder may be a
        bucket others read.
        """
        if meta is None:
            meta = folder.read_meta() if folder.exists() else {}
        self._hand_over(folder, {**os.environ, **trust.secrets_env(folder.key, meta)}, fresh=fresh)

    def _kill_recorded(self, run: dict[str, Any]) -> None:
        """Stop the processes a run record names (only if they are still the ones it started)."""
        for pid, started in run.get("handles", {}).values():
            kill_group(int(pid), started=started)
