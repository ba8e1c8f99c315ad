"""The Docker backend's dispatcher: ``python -m jobsub.backends.docker.dispatch SOCKET [BASE_URL]``.

One detached process per user, Python, jobsub version and engine (started
by the first submission, like the local backend's fork server), so a loop
of 100 ``submit`` calls costs 100 socket requests, not 100 processes that
each import the docker SDK (~0.2 s of CPU and ~40 MB each).  It outlives
the submitting process; it keeps nothing that is not also in the folders.

::

    client ──{"op": "adopt", "folder": URL}──> dispatcher: lock <folder>/docker/lock, read docker/spec.json
                                                │  start task 0 before replying (bad mounts, networks,
                                                │  devices fail the submit, not a later poll)
                                                │  start more as slots free: ≤ array_parallelism tasks
                                                │  (one container per rank) run at once
    engine ──die/destroy events──> wake ──> finalize the containers they name (one containers()
                                                listing every POLL_S is the safety net):
                                                inspect (exit code, OOMKilled) ─> log/<i>.<r>.container
                                                ─> exit/<i>.json ─> remove the container
                                                deadlines: SIGUSR2 before timeout_min, then SIGTERM,
                                                SIGKILL after a grace; exit code 75 requeues the task

Markers in the job folder: ``run/<i>.json`` (container ids, start time) when
a task starts, ``exit/<i>.json`` (state, reason, exit codes) when it ends.
The client writes ``exit/<i>.json`` itself for cancellations, before it
kills, so the dispatcher never reports a cancelled task as failed.

A submission is managed by whoever holds its ``docker/lock`` (flock): a
client that finds unfinished tasks and a free lock (the dispatcher died, or
the machine rebooted) asks its own dispatcher to adopt the folder, which
rebuilds the state from the markers and the containers' labels.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import logging
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ... import worker
from ...folder import JobFolder
from .._daemon import JsonLineServer, run_daemon
from .engine import (
    connect,
    final_status,
    task_env_and_labels,
    try_lock,
    unless_gone,
)

logger = logging.getLogger("jobsub.docker.dispatch")

IDLE_EXIT_S = float(os.environ.get("JOBSUB_DOCKER_IDLE_S", "600"))
POLL_S = 1.0  # safety net when events are flowing; events wake the loop at once
KILL_GRACE_S = 3.0
MAX_ATTEMPTS = 100  # safety net; the worker's own countdown limits checkpoint requeues
POOL_SIZE = 8  # concurrent engine calls; docker-py's connection pool holds 10
_LIVE = ("created", "running", "restarting", "paused", "removing")


@dataclass
class Task:
    index: int
    attempt: int = 0
    containers: dict[int, str] = field(default_factory=dict)  # rank -> container id
    start: float = 0.0
    phase: str = "pending"  # pending -> launching -> running -> finalizing
    signalled: bool = False
    killed_at: float | None = None


@dataclass
class Submission:
    folder: JobFolder
    spec: dict[str, Any]
    lock: Any  # the open lock file; closing it releases the submission
    pending: collections.deque[Task] = field(default_factory=collections.deque)
    running: dict[int, Task] = field(default_factory=dict)  # launching or running: they hold a slot
    finalizing: dict[int, Task] = field(default_factory=dict)  # ended: their slot is free already

    @property
    def key(self) -> str:
        return self.folder.key


class Dispatcher(JsonLineServer):
    """The loop thread owns every ``Submission`` and ``Task``; engine calls run in a pool.

    Starting a container costs the engine ~0.12 s: in one thread, the tasks
    of an array would start strictly one after the other.  Pool threads do
    the calls (create+start, inspect+logs+remove) and post a closure back to
    the loop, which alone changes the bookkeeping.
    """

    def __init__(self, sock_path: str, base_url: str | None) -> None:
        self.sock_path = sock_path
        self.api = connect(base_url)
        self.base_url = base_url
        self.subs: dict[str, Submission] = {}
        super().__init__()
        self.last_poll = 0.0
        self.events_ok = False
        self.died: dict[str, float] = {}  # container id -> when its "die" event came
        self.died_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="docker-call")
        self.posted: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)

    # -- life cycle ---------------------------------------------------------------------
    def serve(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.sock_path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.sock_path)
        os.chmod(self.sock_path, 0o600)
        self.listener.listen(64)
        threading.Thread(target=self._watch_events, name="docker-events", daemon=True).start()
        logger.info("dispatching on %s (pid %d)", self.sock_path, os.getpid())
        while True:
            self.step()
            if not self.subs and not self.conns and time.monotonic() - self.last_activity > IDLE_EXIT_S:
                logger.info("idle for %.0f s, exiting", IDLE_EXIT_S)
                return

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self.wake_w, b"x")

    def post(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the loop thread (called from pool threads)."""
        self.posted.put(fn)
        self.wake()

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

    def step(self) -> None:
        live = any(s.running or s.finalizing for s in self.subs.values())
        poll_s = POLL_S if self.events_ok else 0.25
        timeout = poll_s if live else 5.0
        deadline = self.next_deadline()
        if deadline is not None:
            timeout = max(0.0, min(timeout, deadline - time.time()))
        woke = self.serve_ready(timeout)
        while not self.posted.empty():
            self.guard(self.posted.get())
        if live and (woke or time.monotonic() - self.last_poll >= poll_s):
            self.guard(self.refresh)
        self.guard(self.check_deadlines)
        self.guard(self.start_pending)

    @staticmethod
    def guard(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # report, don't die: every other submission still needs this loop
            logger.exception("%s failed", getattr(fn, "__name__", fn))

    # -- requests ----------------------------------------------------------------------
    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        if req.get("op") == "ping":
            return {"ok": True, "pid": os.getpid()}
        if req.get("op") == "adopt":
            return self.adopt(JobFolder.from_url(req["folder"]), first=bool(req.get("first")))
        return {"ok": False, "error": f"unknown op {req.get('op')!r}"}

    def adopt(self, folder: JobFolder, first: bool) -> dict[str, Any]:
        """Take over a submission: rebuild it from markers and containers; start its first task.

        The first task starts before the reply (in this thread), so that a
        container the engine refuses (bad mount, network, device) fails the
        submit itself rather than a later poll.
        """
        if folder.key in self.subs:
            return {"ok": True, "already": True}
        lock = try_lock(folder)
        if lock is None:
            return {"ok": True, "managed_elsewhere": True}
        try:
            sub = self._rebuild(folder, lock)
        except Exception:
            lock.close()  # or the submission would look managed while nobody manages it
            raise
        self.subs[folder.key] = sub
        if first and sub.pending:
            task = sub.pending.popleft()
            self._begin_launch(sub, task)
            try:
                self._create_and_start(sub, task)
            except Exception as exc:
                logger.info("first task of %s did not start: %s", folder.key, exc)
                self._launched(sub, task, exc)
                self.drop(sub)
                return {"ok": False, "error": _api_message(exc)}
            self._launched(sub, task, None)
        self.last_poll = 0.0  # look at the adopted containers soon
        return {"ok": True}

    def _rebuild(self, folder: JobFolder, lock: Any) -> Submission:
        """The submission as the markers and the containers' labels tell it."""
        sub = Submission(folder, json.loads(folder.read_marker("docker", "spec.json") or b"{}"), lock)
        existing: dict[int, dict[int, str]] = collections.defaultdict(dict)
        restart: set[int] = set()
        for c in self.api.containers(all=True, filters={"label": [f"jobsub.key={folder.key}"]}):
            labels = c.get("Labels") or {}
            index = int(labels["jobsub.task"])
            if c["State"] == "created":  # created, never started (its dispatcher died): start afresh
                self.api.remove_container(c["Id"], force=True)
                restart.add(index)
                continue
            existing[index][int(labels["jobsub.rank"])] = c["Id"]
        for index in range(sub.spec["n"]):
            run = folder.read_marker("run", f"{index}.json")
            ended = folder.read_marker("exit", f"{index}.json") is not None
            if (ended or run is None or index in restart) and not existing.get(index):
                if not ended:
                    sub.pending.append(Task(index))
                continue
            info = json.loads(run) if run else {}
            task = Task(index, attempt=info.get("attempt", 1), start=info.get("start", time.time()), phase="running")
            task.containers = existing.get(index) or {int(r): c for r, c in info.get("containers", {}).items()}
            sub.running[index] = task  # ended ones too: refresh() finalizes them (logs, removal)
        return sub

    # -- starting tasks ------------------------------------------------------------------
    def start_pending(self) -> None:
        for sub in list(self.subs.values()):
            while sub.pending and len(sub.running) < sub.spec["parallelism"]:
                task = sub.pending.popleft()
                if sub.folder.read_marker("exit", f"{task.index}.json") is not None:
                    continue  # cancelled before it started
                self._begin_launch(sub, task)
                self.pool.submit(self._launch_call, sub, task)
            self.maybe_done(sub)

    def _begin_launch(self, sub: Submission, task: Task) -> None:
        task.attempt += 1
        task.containers, task.signalled, task.killed_at = {}, False, None
        task.phase, task.start = "launching", time.time()
        sub.running[task.index] = task

    def _launch_call(self, sub: Submission, task: Task) -> None:  # in a pool thread
        error: BaseException | None = None
        try:
            self._create_and_start(sub, task)
        except Exception as exc:
            error = exc
        self.post(functools.partial(self._launched, sub, task, error))

    def _create_and_start(self, sub: Submission, task: Task) -> None:
        """One container per rank, the run marker, then start them (touches only ``task``)."""
        spec = sub.spec
        host_config = self.api.create_host_config(**spec["host_config"])
        containers = {}
        try:
            for rank in range(spec["ranks"]):
                env, labels = task_env_and_labels(spec, sub.key, task.index, rank, task.attempt)
                suffix = f"-a{task.attempt}" if task.attempt > 1 else ""
                containers[rank] = self.api.create_container(
                    spec["image"], spec["command"], name=f"{spec['name']}-{task.index}.{rank}{suffix}",
                    environment=env, labels=labels, host_config=host_config, detach=True, **spec["create"],
                )["Id"]
            record = {"containers": containers, "start": task.start, "attempt": task.attempt, "dispatcher": os.getpid()}
            sub.folder.write_marker("run", f"{task.index}.json", json.dumps(record).encode())
            for cid in containers.values():
                self.api.start(cid)
        except Exception:
            for cid in containers.values():
                self._remove(cid)
            raise
        task.containers = containers

    def _launched(self, sub: Submission, task: Task, exc: BaseException | None) -> None:
        if exc is not None:
            logger.warning("task %d of %s did not start: %s", task.index, sub.key, exc)
            sub.running.pop(task.index, None)
            sub.folder.write_exit(task.index, "FAILED", f"the container did not start: {_api_message(exc)}")
            return
        task.phase = "running"
        if sub.folder.read_marker("exit", f"{task.index}.json") is not None:  # cancelled meanwhile
            self.kill(task, "SIGKILL")

    # -- ending tasks -----------------------------------------------------------------------
    def refresh(self) -> None:
        """Finalize the tasks whose containers all ended.

        The engine's die/destroy events name the containers that ended; ONE
        listing of every managed container is the safety net, taken every
        ``POLL_S`` (on every wake while the event stream is down).  An event
        is kept until a task claims it, so one that comes before its task
        is marked running is not lost.
        """
        now = time.monotonic()
        with self.died_lock:
            died = dict(self.died)
        listing: dict[str, str] | None = None
        if not self.events_ok or now - self.last_poll >= POLL_S:
            self.last_poll = now
            listing = {
                c["Id"]: c["State"]
                for c in self.api.containers(all=True, filters={"label": ["jobsub.backend=docker"]})
            }
        claimed: set[str] = set()
        for sub in list(self.subs.values()):
            for task in list(sub.running.values()):
                cids = list(task.containers.values())
                ended = [c in died or (listing is not None and listing.get(c) not in _LIVE) for c in cids]
                if task.phase == "running" and all(ended):
                    claimed.update(cids)
                    task.phase = "finalizing"
                    sub.finalizing[task.index] = sub.running.pop(task.index)
                    self.pool.submit(self._finalize_call, sub, task)
        with self.died_lock:  # forget what was claimed, and what is not ours after a while
            self.died = {c: t for c, t in self.died.items() if c not in claimed and now - t < 60}

    def _finalize_call(self, sub: Submission, task: Task) -> None:  # in a pool thread
        """Read how the containers ended and keep their output.

        A container that someone else removed meanwhile (404, or 409 "removal
        in progress") vanished: its task is LOST.
        """
        infos: list[dict[str, Any] | None] = []
        try:
            for rank, cid in sorted(task.containers.items()):
                info: dict[str, Any] | None = None
                with unless_gone():
                    for _ in range(100):  # "die" can come a moment before the state says so
                        info = self.api.inspect_container(cid)["State"]
                        if not info.get("Running"):
                            break
                        time.sleep(0.01)
                    output = self.api.logs(cid, stdout=True, stderr=True)
                    if output:
                        sub.folder.write_marker("log", f"{task.index}.{rank}.container", output)
                if info is not None and info.get("Status") in ("removing", "dead"):
                    info = None  # being removed, and not by us (we remove after the end is recorded)
                infos.append(info)
        except Exception as exc:  # the engine failed: try again at the next refresh
            logger.warning("finalizing task %d of %s failed: %s", task.index, sub.key, exc)
            self.post(functools.partial(self._finalized, sub, task, None))
            return
        self.post(functools.partial(self._finalized, sub, task, infos))

    def _finalized(self, sub: Submission, task: Task, infos: list[dict[str, Any] | None] | None) -> None:
        """Record the task's end (or requeue it), THEN remove its containers: the record outlives them."""
        sub.finalizing.pop(task.index, None)
        if infos is None:
            task.phase = "running"
            sub.running[task.index] = task
            return
        state, reason, codes = final_status(infos, sub.spec["host_config"].get("mem_limit"))
        ended = sub.folder.read_marker("exit", f"{task.index}.json") is not None  # cancelled, timed out
        if worker.REQUEUE_EXIT_CODE in codes and not ended and task.attempt < MAX_ATTEMPTS:
            logger.info("requeueing task %d of %s (checkpointed)", task.index, sub.key)
            sub.pending.appendleft(task)
        else:
            sub.folder.write_exit(task.index, state, reason, codes)
        for cid in task.containers.values():
            self.pool.submit(self._remove, cid)
        self.maybe_done(sub)

    def _remove(self, cid: str) -> None:  # in a pool thread
        try:
            with unless_gone():  # gone already: fine
                self.api.remove_container(cid, force=True)
        except Exception as exc:  # left behind; a later adoption of the folder removes it
            logger.warning("could not remove container %s: %s", cid[:12], exc)

    def maybe_done(self, sub: Submission) -> None:
        if not sub.pending and not sub.running and not sub.finalizing:
            self.drop(sub)

    def drop(self, sub: Submission) -> None:
        self.subs.pop(sub.key, None)
        sub.lock.close()
        self.last_activity = time.monotonic()

    # -- time limits ---------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        times = []
        for sub in self.subs.values():
            limit = sub.spec.get("timeout_s")
            for task in sub.running.values():
                if task.killed_at is not None:
                    times.append(task.killed_at + KILL_GRACE_S)
                elif limit is not None:
                    times.append(task.start + limit - (0 if task.signalled else _warn_before(sub.spec)))
        return min(times) if times else None

    def check_deadlines(self) -> None:
        now = time.time()
        for sub in self.subs.values():
            limit = sub.spec.get("timeout_s")
            for task in list(sub.running.values()):
                if task.phase != "running":
                    continue
                if task.killed_at is not None:
                    if now >= task.killed_at + KILL_GRACE_S:
                        self.kill(task, "SIGKILL")
                        task.killed_at = now + 3600  # once
                    continue
                if limit is None:
                    continue
                if not task.signalled and now >= task.start + limit - _warn_before(sub.spec):
                    task.signalled = True
                    self.pool.submit(self._signal, task.containers[0], "SIGUSR2")  # checkpoint, if it can
                if now >= task.start + limit:
                    minutes = limit / 60
                    sub.folder.write_exit(task.index, "TIMEOUT", f"time limit of {minutes:g} min (timeout_min) reached")
                    self.kill(task, "SIGTERM")
                    task.killed_at = now

    def kill(self, task: Task, sig: str) -> None:
        for cid in task.containers.values():
            self.pool.submit(self._signal, cid, sig)

    def _signal(self, cid: str, sig: str) -> None:  # in a pool thread
        with contextlib.suppress(Exception):  # already gone: refresh() will see it
            self.api.kill(cid, signal=sig)


def _warn_before(spec: dict[str, Any]) -> float:
    limit: float = spec["timeout_s"]
    return float(min(spec.get("signal_delay_s", 90), limit / 2))


def _api_message(exc: BaseException) -> str:
    return str(getattr(exc, "explanation", None) or exc)


def main() -> None:
    sock_path = sys.argv[1]
    base_url = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
    run_daemon(sock_path, lambda: Dispatcher(sock_path, base_url).serve())


if __name__ == "__main__":
    main()
