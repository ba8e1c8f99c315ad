"""The Docker backend's dispatcher: ``python -m jobsub.backends.docker.dispatch SOCKET [BASE_URL]``.

One detached process per user, Python, jobsub version and engine (started
by the first submission, like the local backend's fork server), so a loop
of 100 ``submit`` calls costs 100 socket requests, not 100 processes that
each import the docker SDK (~0.2 s of CPU and ~40 MB each).  The queue,
dependencies, deadlines, requeue and the end -> state rule are the shared
supervisor's (``_supervisor``); what is here is how containers start, end
and are signalled.

::

    start_task ──pool──> create one container per rank ─> run/<i>.json ─> start them
                         (the first task of a submission before replying: a bad mount,
                          network or device fails the submit, not a later poll)
    engine ──die/destroy events──> wake ──> the tasks whose containers all ended
                                   (one containers() listing every POLL_S is the safety net)
        ──pool──> inspect (exit code, OOMKilled) ─> log/<i>.<r>.container ─> task_ended
                  ─> exit/<i>.json ─> remove the containers (the record outlives them)

Engine calls (~0.1 s each) run in a thread pool and post their outcome back
to the loop thread, which alone changes the bookkeeping.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ...folder import JobFolder
from ...worker import IO_ERROR_EXIT_CODE
from .._daemon import run_daemon
from .._supervisor import Submission, Supervisor, Task, TaskEnd
from .engine import connect, end_of_containers, task_env_and_labels, unless_gone

logger = logging.getLogger("jobsub.docker.dispatch")

IDLE_EXIT_S = float(os.environ.get("JOBSUB_DOCKER_IDLE_S", "600"))
POLL_S = 1.0  # safety net when events are flowing; events wake the loop at once
POOL_SIZE = 8  # concurrent engine calls; docker-py's connection pool holds 10
_LIVE = ("created", "running", "restarting", "paused", "removing")
_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "STORAGE_EMULATOR_HOST")
"""Where a task was told its folder's store is (``Storage.task_env``); none: the store's public endpoint."""


class Dispatcher(Supervisor):
    """Starts each rank of a task as a container; sees them end through the engine's events."""

    kind = "docker"

    def __init__(self, base_url: str | None) -> None:
        super().__init__()
        self.api = connect(base_url)
        self.base_url = base_url
        self.last_poll = 0.0
        self.events_ok = False
        self.died: dict[str, float] = {}  # container id -> when its "die" event came
        self.died_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="docker-call")
        self.posted: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.existing: dict[tuple[str, int], dict[int, str]] = {}  # (key, index) -> rank -> id, while adopting

    def serve(self, sock_path: str) -> None:
        self.listen(sock_path)
        threading.Thread(target=self._watch_events, name="docker-events", daemon=True).start()
        self.serve_forever(sock_path, IDLE_EXIT_S, idle_timeout=5.0)

    def post(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the loop thread (called from pool threads)."""
        self.posted.put(fn)
        self.wake()

    def step(self, idle_timeout: float) -> None:
        live = any(t.phase in ("running", "ending") for s in self.subs.values() for t in s.running.values())
        super().step(min(idle_timeout, POLL_S if self.events_ok else 0.25) if live else idle_timeout)

    def _watch_events(self) -> None:
        """Wake the loop on every container end; reconnect when the stream breaks."""
        filters = {"type": ["container"], "event": ["die", "destroy"], "label": ["jobsub.backend=docker"]}
        while True:
            try:
                client = connect(self.base_url)
                self.events_ok = True
                for event in client.events(filters=filters, decode=True):
                    # the listing may still say "running" right after "die": remember who died
                    with self.died_lock:
                        self.died[event.get("id") or event.get("Actor", {}).get("ID", "")] = time.monotonic()
                    self.wake()
            except Exception:  # report, don't die: the loop polls meanwhile
                logger.exception("the engine's event stream broke; polling until it is back")
            self.events_ok = False
            time.sleep(1.0)

    # -- starting ------------------------------------------------------------------------------
    def start_task(self, task: Task, wait: bool) -> None:
        if wait:
            self._create_and_start(task)
            self.started(task)
        else:
            self.pool.submit(self._start_call, task)

    def _start_call(self, task: Task) -> None:  # in a pool thread
        try:
            self._create_and_start(task)
        except Exception as exc:
            why = str(getattr(exc, "explanation", None) or exc)
            self.post(functools.partial(self.start_failed, task, why))
            return
        self.post(functools.partial(self.started, task))

    def _create_and_start(self, task: Task) -> None:
        """One container per rank, then start them (touches only ``task``)."""
        sub = task.sub
        spec = sub.spec
        # an upstream's folder deleted since the submission is not mounted (the engine would refuse
        # the container): the task then finds it gone and ends CANCELLED with DependencyError
        mounts = [m for m in spec["host_config"].get("mounts") or [] if not m["ReadOnly"] or os.path.exists(m["Source"])]
        host_config = self.api.create_host_config(**{**spec["host_config"], "mounts": mounts})
        containers: dict[int, str] = {}
        try:
            for rank in range(sub.ranks):
                env, labels = task_env_and_labels(spec, sub.folder.key, int(task.name), rank, task.attempt)
                env.update(sub.env)  # passed by name (pass_env, a bucket's credentials): never in the folder
                suffix = f"-a{task.attempt}" if task.attempt > 1 else ""
                containers[rank] = self.api.create_container(
                    spec["image"], spec["command"], name=f"{spec['name']}-{task.name}.{rank}{suffix}",
                    environment=env, labels=labels, host_config=host_config, detach=True, **spec["create"],
                )["Id"]
            for cid in containers.values():
                self.api.start(cid)
        except Exception:
            for cid in containers.values():
                self._remove(cid)
            raise
        task.handles = containers

    def signal_task(self, task: Task, sig: signal.Signals) -> None:
        targets = task.handles.values() if sig != signal.SIGUSR2 else [task.handles.get(0)]
        for cid in targets:
            if cid:
                self.pool.submit(self._signal, cid, sig.name)

    def _signal(self, cid: str, sig: str) -> None:  # in a pool thread
        try:
            self.api.kill(cid, signal=sig)
        except Exception:  # already gone: watch() sees it
            logger.debug("could not send %s to %s", sig, cid[:12])

    # -- adopting --------------------------------------------------------------------------------
    def rebuild(self, folder: JobFolder, lock: Any) -> Submission:
        """The containers' labels tell what still exists; created-but-never-started ones start afresh."""
        self.existing = {}
        for c in self.api.containers(all=True, filters={"label": [f"jobsub.key={folder.key}"]}):
            labels = c.get("Labels") or {}
            if c["State"] == "created":  # its dispatcher died between create and start
                self.api.remove_container(c["Id"], force=True)
                continue
            self.existing.setdefault((folder.key, int(labels["jobsub.task"])), {})[int(labels["jobsub.rank"])] = c["Id"]
        try:
            return super().rebuild(folder, lock)
        finally:
            self.existing = {}

    def rebuild_task(self, task: Task, run: dict[str, Any]) -> bool:
        found = self.existing.get((task.sub.folder.key, int(task.name)))
        recorded = {int(rank): cid for rank, cid in run.get("handles", {}).items()}
        task.handles = found or recorded
        # containers gone without a record of their end: watch() reads that (LOST, or its result)
        return bool(task.handles)

    # -- ending ----------------------------------------------------------------------------------
    def watch(self) -> None:
        while not self.posted.empty():
            self.posted.get()()
        self.refresh()

    def refresh(self) -> None:
        """Read the end of the tasks whose containers all ended.

        The engine's die/destroy events name the containers that ended; ONE
        listing of every jobsub container is the safety net, taken every
        ``POLL_S`` (on every wake while the event stream is down).  An event
        is kept until a task claims it, so one that comes before its task is
        marked running is not lost.
        """
        running = [t for s in self.subs.values() for t in s.running.values() if t.phase == "running"]
        if not running:
            return
        now = time.monotonic()
        with self.died_lock:
            died = dict(self.died)
        listing: dict[str, str] | None = None
        if not self.events_ok or now - self.last_poll >= POLL_S:
            self.last_poll = now
            listing = {
                c["Id"]: c["State"] for c in self.api.containers(all=True, filters={"label": ["jobsub.backend=docker"]})
            }
        claimed: set[str] = set()
        for task in running:
            cids = list(task.handles.values())
            if all(c in died or (listing is not None and listing.get(c) not in _LIVE) for c in cids):
                claimed.update(cids)
                task.phase = "ending"
                self.pool.submit(self._finalize_call, task)
        with self.died_lock:  # forget what was claimed, and what is not ours after a while
            self.died = {c: t for c, t in self.died.items() if c not in claimed and now - t < 60}

    def _finalize_call(self, task: Task) -> None:  # in a pool thread
        """Read how the containers ended and keep their output (a full disk must not stop this)."""
        infos: list[dict[str, Any] | None] = []
        try:
            for rank, cid in sorted(task.handles.items()):
                info: dict[str, Any] | None = None
                with unless_gone():
                    for _ in range(100):  # "die" can come a moment before the state says so
                        info = self.api.inspect_container(cid)["State"]
                        if not info.get("Running"):
                            break
                        time.sleep(0.01)
                    output = self.api.logs(cid, stdout=True, stderr=True)
                    if output:
                        self.safely(lambda r=rank, o=output: task.sub.folder.write_task_log(int(task.name), r, "container", o), None)
                if info is not None and info.get("Status") in ("removing", "dead"):
                    info = None  # being removed, and not by us (we remove after the end is recorded)
                infos.append(info)
        except Exception as exc:  # the engine failed: try again at the next refresh
            logger.warning("reading the end of task %s of %s failed: %s", task.name, task.sub.url, exc)
            self.post(functools.partial(setattr, task, "phase", "running"))
            return
        self.post(functools.partial(self._finalized, task, infos))

    def _finalized(self, task: Task, infos: list[dict[str, Any] | None]) -> None:
        """Record the end (or requeue), THEN remove the containers: the record outlives them."""
        folder = task.sub.folder
        end = end_of_containers(infos, task.sub.spec["host_config"].get("mem_limit"))
        if end.vanished and all(folder.has_result(int(task.name), r) for r in range(task.sub.ranks)):
            end = TaskEnd([0] * task.sub.ranks, [None] * task.sub.ranks)  # gone, but its results say it ended well
        elif IO_ERROR_EXIT_CODE in end.codes and folder.local_file() is None:
            end = end._replace(error=unreachable_folder(task.sub.spec, folder.url))
        self.task_ended(task, end)
        for cid in task.handles.values():
            self.pool.submit(self._remove, cid)

    def _remove(self, cid: str) -> None:  # in a pool thread
        try:
            with unless_gone():  # gone already: fine
                self.api.remove_container(cid, force=True)
        except Exception as exc:  # left behind; a later adoption of the folder removes it
            logger.warning("could not remove container %s: %s", cid[:12], exc)


def unreachable_folder(spec: dict[str, Any], url: str) -> str:
    """Why a task's container could not reach its bucket folder: the endpoint it was told, its network."""
    from urllib.parse import urlsplit

    env = spec["environment"]
    endpoint = next((env[name] for name in _ENDPOINT_VARIABLES if env.get(name)), "the store's public endpoint")
    mode = spec["host_config"].get("network_mode") or "default"
    why = f"its container, on network {mode!r}, could not reach {url} at {endpoint}"
    host = urlsplit(endpoint if "://" in endpoint else "//" + endpoint).hostname or ""
    if mode != "host" and (host == "localhost" or host.startswith("127.") or host == "::1"):
        why += " (this machine's loopback: a container reaches it only with docker_network_mode='host')"
    return f"{why}; the container's output is in the task's stderr"


def main() -> None:
    sock_path = sys.argv[1]
    base_url = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
    run_daemon(sock_path, lambda: Dispatcher(base_url).serve(sock_path))


if __name__ == "__main__":
    main()
