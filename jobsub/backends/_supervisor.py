"""The task supervisor shared by the backends without a scheduler (local, Docker).

::

    client: spec -> <folder>/<backend>/spec.json, then {"op": "adopt", "folder": URL} to its supervisor
    supervisor (one detached daemon per user, Python, jobsub version and what it serves):
        claim the submission (a lock in the runtime dir: one supervisor per submission)
        queue its tasks ─> hold each until the jobs it takes as arguments have ended
                       ─> start at most ``array_parallelism`` at once        start_task()   (fork / container)
        deadlines: SIGUSR2 ``signal_delay_s`` before the limit, SIGTERM at it (TIMEOUT),
                   SIGKILL ``KILL_GRACE_S`` later                          signal_task()
        a task ends ─> exit 75 and requeue/<i>: run again (its checkpoint); else exit/<i>.json
    client (_supervised.SupervisedBackend): states from exit records, then ONE request to the
        supervisor; a submission no supervisor holds is adopted (rebuilt from its spec and
        run/exit records): a supervisor that died loses nothing

What each backend keeps for itself is how it starts, signals and watches a
task (a fork or a container); the queue, the deadline ladder, requeueing and
the rule that turns a task's end into a state are here, once.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..errors import BackendError
from ..folder import JobFolder
from ..worker import DEPENDENCY_FAILED_EXIT_CODE, REQUEUE_EXIT_CODE, warning_delay_s
from ._daemon import JsonLineServer
from ._exits import DEPENDENCY_FAILED, signal_reason, worker_exit
from ._supervised import claim

__all__ = ["Submission", "Supervisor", "Task", "TaskEnd", "end_state"]

logger = logging.getLogger("jobsub.supervisor")

KILL_GRACE_S = 3.0
MAX_ATTEMPTS = 100  # safety net; the worker's own countdown (max_num_timeout) limits requeues
HOLD_CHECK_S = 0.25  # how often tasks held for their dependencies look at them again
UNRECORDED_KEEP_S = 3600.0  # how long an end that could not be written is kept for clients to ask
UNREACHABLE_S = float(os.environ.get("JOBSUB_UNREACHABLE_S", "60"))
"""How long a task waits on a job whose folder cannot be looked at before it ends FAILED saying so
(at once when the store refuses: no credentials, access denied); transient errors are retried
inside the storage first."""
_STORE_ERRORS = (OSError, BackendError)
"""What a store raises when a folder cannot be reached (after its own retries)."""


# -- tasks and how they end -----------------------------------------------------------------------
class TaskEnd(NamedTuple):
    """How the ranks of one task ended, as the backend saw them."""

    codes: list[int | None]
    """Exit code of each rank; None if it is not known (the process or container vanished)."""
    signals: list[int | None]
    """The signal that killed each rank, if one did."""
    oom: str = ""
    """Why the task was killed for memory ("" if it was not)."""
    error: str = ""
    """The runtime's own words about the end (a container's Error)."""
    vanished: str = ""
    """Set when a rank vanished before its end was seen: the task is LOST."""


@dataclass(eq=False)
class Task:
    sub: Submission
    index: int
    attempt: int = 0
    phase: str = "pending"  # pending -> starting -> running -> ending
    handles: dict[int, Any] = field(default_factory=dict)  # rank -> pid or container id
    start: float = 0.0
    warned: bool = False
    timed_out: bool = False
    cancelled: bool = False
    kill_at: float | None = None
    waits_for: list[list[Any]] = field(default_factory=list)  # [[folder url, index, [ranks]], ...]
    scratch: dict[str, Any] = field(default_factory=dict)  # what the backend keeps per attempt

    @property
    def name(self) -> str:
        return str(self.index + self.sub.offset)


@dataclass(eq=False)
class Submission:
    folder: JobFolder
    spec: dict[str, Any]
    lock: Any
    pending: collections.deque[Task] = field(default_factory=collections.deque)
    running: dict[int, Task] = field(default_factory=dict)  # starting, running or ending: they hold a slot
    unrecorded: dict[str, tuple[str, str]] = field(default_factory=dict)  # ends the folder refused
    env: dict[str, str] = field(default_factory=dict)
    """What the tasks' environment takes from the client: sent with the request, never written to
    the folder (it may hold credentials, and the folder may be a shared bucket)."""
    store_env: dict[str, str] | None = None
    """The SDK environment (credentials, endpoints, profile) of the client that handed the
    submission over: its folder and its upstreams' are reached with it, never with the
    environment this daemon was started in (``jobsub.storage.store_environment``)."""
    scratch: dict[str, Any] = field(default_factory=dict)  # what the backend keeps per submission

    @property
    def parallelism(self) -> int:
        return int(self.spec.get("parallelism") or 256)

    @property
    def url(self) -> str:
        return self.folder.url

    @property
    def offset(self) -> int:
        return int(self.spec.get("offset", 0))

    @property
    def ranks(self) -> int:
        return int(self.spec.get("ranks", 1))

    @property
    def timeout_s(self) -> float | None:
        limit = self.spec.get("timeout_s")
        return None if limit is None else float(limit)


def end_state(
    end: TaskEnd, *, cancelled: bool = False, timed_out: bool = False, warned: bool = False, limit_s: float | None = None
) -> tuple[str, str]:
    """(state, reason) of a task from how its ranks ended: the one rule of every supervised backend.

    ``warned``: the task got its checkpoint signal; failing after it is the time limit's doing.
    """
    codes = end.codes
    if cancelled:
        return "CANCELLED", "cancelled by the user"
    if end.oom:
        return "OUT_OF_MEMORY", end.oom
    if timed_out or (warned and any(c not in (0, None) for c in codes)):
        return "TIMEOUT", f"time limit of {(limit_s or 0) / 60:g} min (timeout_min) reached"
    if end.vanished:
        return "LOST", end.vanished
    if all(c == 0 for c in codes):
        return "COMPLETED", ""
    if DEPENDENCY_FAILED_EXIT_CODE in codes:  # any rank's: the task did not run
        return DEPENDENCY_FAILED.state.value, DEPENDENCY_FAILED.reason
    rank = next(r for r, c in enumerate(codes) if c != 0)
    code, sig = codes[rank], end.signals[rank]
    known = worker_exit(code, explained=bool(end.error))
    reason = signal_reason(sig) if sig else known.reason if known is not None else f"exit code {code}"
    return "FAILED", f"{reason}: {end.error}" if end.error else reason


# -- the supervisor itself ------------------------------------------------------------------------
class Supervisor(JsonLineServer):
    """Submissions, their queues and deadlines; a subclass starts, signals and watches tasks.

    Subclasses implement ``start_task`` (then ``started``/``start_failed``),
    ``signal_task``, ``watch`` (find ended tasks, call ``task_ended``) and
    ``rebuild_task`` (adoption: is a task recorded as started still running?).
    """

    kind = ""
    """The backend's name: its spec is ``<folder>/<kind>/spec.json``."""

    def __init__(self) -> None:
        super().__init__()
        self.subs: dict[str, Submission] = {}
        self.last_hold_check = 0.0

    # -- what a backend supplies --------------------------------------------------------------
    def start_task(self, task: Task, wait: bool) -> None:
        """Start every rank of ``task``, then call ``started`` (or raise, or call ``start_failed``).

        ``wait``: start it before returning (the first task of a submission,
        whose refusal the client is waiting to hear); else it may finish later.
        """
        raise NotImplementedError

    def signal_task(self, task: Task, sig: signal.Signals) -> None:
        raise NotImplementedError

    def watch(self) -> None:
        """Look for tasks whose ranks all ended and call ``task_ended`` for each."""
        raise NotImplementedError

    def rebuild_task(self, task: Task, run: dict[str, Any]) -> bool:
        """Adopting: True if the task ``run`` describes still runs (its handles are set then)."""
        raise NotImplementedError

    # -- requests ---------------------------------------------------------------------------------
    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "adopt":
            store_env = req.get("store_env")
            return self.adopt(
                JobFolder.from_url(req["folder"], env=store_env), first=bool(req.get("first")),
                env=req.get("env") or {}, fresh=req.get("fresh"), store_env=store_env,
            )
        if op == "states":
            return {"ok": True, "states": self.states(req["tasks"])}
        if op == "cancel":
            return {"ok": True, "unknown": [t for t in req["tasks"] if not self.cancel(*t)]}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def adopt(
        self, folder: JobFolder, first: bool = False, env: dict[str, str] | None = None,
        fresh: dict[str, Any] | None = None, store_env: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Take over a submission: its spec, and every task not recorded as ended.

        ``env``: what the tasks' environment takes from the client that asks
        (after a supervisor died, the client that finds the submission).
        ``store_env``: that client's SDK environment, which ``folder`` was opened with.
        ``fresh``: a submission being made now, ``{"spec": ..., "waits_for": ...}`` as the client
        wrote and read them: nothing to read back from the folder.
        """
        if folder.url in self.subs:
            return {"ok": True, "already": True}
        lock = claim(folder.url)
        if lock is None:
            return {"ok": True, "managed_elsewhere": True}
        try:
            sub = self.fresh(folder, lock, fresh) if fresh is not None else self.rebuild(folder, lock)
        except Exception:
            lock.close()  # or the submission would look supervised while nobody supervises it
            raise
        sub.env, sub.store_env = dict(env or {}), store_env
        self.subs[sub.url] = sub
        if first and sub.pending and not sub.pending[0].waits_for:
            # the first task starts before the reply: a task the runtime refuses (a bad mount,
            # an image it cannot run) fails the submit itself rather than a later poll
            error = self.launch(sub, sub.pending.popleft(), reply_errors=True)
            if error:
                self.drop(sub)
                return {"ok": False, "error": error}
        return {"ok": True}

    @staticmethod
    def fresh(folder: JobFolder, lock: Any, given: dict[str, Any]) -> Submission:
        """A new submission: every task pending (its spec is in the folder too, for an adoption)."""
        sub = Submission(folder, given["spec"], lock)
        given_waits = given.get("waits_for")  # as the client read it (JSON: its keys are text)
        waits = {int(i): refs for i, refs in given_waits.items()} if given_waits is not None else folder.waits_for()
        sub.pending.extend(
            Task(sub, index, waits_for=waits.get(index + sub.offset, [])) for index in range(int(sub.spec["n"]))
        )
        return sub

    def rebuild(self, folder: JobFolder, lock: Any) -> Submission:
        spec = folder.read_backend_json(self.kind, "spec.json")
        if spec is None or "damaged" in spec:
            raise ValueError(f"{folder.url} has no usable {self.kind}/spec.json")
        sub = Submission(folder, spec, lock)
        ended = folder.ended()
        waits = folder.waits_for()
        for index in range(int(spec["n"])):
            task = Task(sub, index, waits_for=waits.get(index + sub.offset, []))
            if task.name in ended:
                continue
            run = folder.read_run(task.name)
            if run is not None and "damaged" not in run and self.rebuild_task(task, run):
                task.attempt, task.start, task.phase = int(run.get("attempt", 1)), float(run.get("start", 0)), "running"
                sub.running[index] = task
            else:
                sub.pending.append(task)
        return sub

    def states(self, tasks: dict[str, Sequence[str]]) -> dict[str, Any]:
        """For each folder URL and task name: [state, reason], or None for a folder not held here."""
        answer: dict[str, Any] = {}
        for url, names in tasks.items():
            sub = self.subs.get(url)
            if sub is None:
                answer[url] = None
                continue
            running = {t.name for t in sub.running.values() if t.phase in ("running", "ending")}
            held = {t.name: t.scratch["unreachable"] for t in sub.pending if "unreachable" in t.scratch}
            answer[url] = {
                name: list(sub.unrecorded[name]) if name in sub.unrecorded
                else ["RUNNING", ""] if name in running else ["PENDING", held.get(name, "")]
                for name in names
            }
        return answer

    # -- starting -----------------------------------------------------------------------------------
    def start_pending(self) -> None:
        now = time.monotonic()
        check_holds = now - self.last_hold_check >= HOLD_CHECK_S
        if check_holds:
            self.last_hold_check = now
        probe = _Upstreams()  # one look per upstream folder this round, however many tasks wait on it
        for sub in list(self.subs.values()):
            held: list[Task] = []
            while sub.pending and self.slots_used(sub) < self.limit(sub):
                task = sub.pending.popleft()
                try:
                    if task.waits_for and not (check_holds and self.dependencies_ended(task, probe)):
                        held.append(task)
                        continue
                except _Unreachable as exc:  # said to the task's jobs, not only to this daemon's log
                    self.finish(task, "FAILED", str(exc), [])
                    continue
                self.launch(sub, task)
            sub.pending.extendleft(reversed(held))
            self.maybe_done(sub)

    def limit(self, sub: Submission) -> int:
        """How many tasks of ``sub`` may run at once now (``array_parallelism``; a backend may ramp up)."""
        return sub.parallelism

    def next_ready(self, sub: Submission) -> Task | None:
        """The next pending task that waits for nothing (taken off the queue), None if there is none."""
        for task in sub.pending:
            if not task.waits_for:
                sub.pending.remove(task)
                return task
        return None

    @staticmethod
    def slots_used(sub: Submission) -> int:
        """Tasks that hold a slot of ``array_parallelism``: a task whose end is being read holds none."""
        return sum(1 for t in sub.running.values() if t.phase != "ending")

    def dependencies_ended(self, task: Task, probe: _Upstreams | None = None) -> bool:
        """Whether every job the task takes as an argument has ended (result or exit record).

        A folder that cannot be looked at is looked at again later, for
        ``UNREACHABLE_S`` at most (not at all when the store refuses): then
        ``_Unreachable`` says why, and the task ends FAILED with it.
        """
        probe = probe or _Upstreams()
        still, reached = [], True
        for ref in task.waits_for:
            url, index, ranks = ref
            try:
                done = probe.ended(url, index, ranks, task.sub.store_env)
            except _STORE_ERRORS as exc:
                since = task.scratch.setdefault("unreachable_since", time.monotonic())
                why = (
                    f"the {self.kind} supervisor cannot look at the job it waits for, {url}, with the "
                    f"environment of the process that submitted it: {exc}"
                )
                if isinstance(exc, PermissionError) or time.monotonic() - since >= UNREACHABLE_S:
                    raise _Unreachable(why) from exc
                task.scratch["unreachable"] = f"{why} (looking again for up to {UNREACHABLE_S:g} s)"
                logger.warning("task %s of %s: %s; looking again", task.name, task.sub.url, why)
                done = reached = False
            if not done:
                still.append(ref)
        task.waits_for = still
        if reached:
            task.scratch.pop("unreachable_since", None)
            task.scratch.pop("unreachable", None)
        return not still

    def begin(self, sub: Submission, task: Task) -> bool:
        """A new attempt of ``task`` takes a slot; False if it was cancelled before it started."""
        if sub.folder.read_exit(task.name) is not None:
            return False
        task.attempt += 1
        task.handles, task.warned, task.timed_out, task.kill_at = {}, False, False, None
        task.scratch = {}
        task.phase, task.start = "starting", time.time()
        sub.running[task.index] = task
        return True

    def launch(self, sub: Submission, task: Task, reply_errors: bool = False) -> str:
        """Start ``task``; "" or (``reply_errors``) the runtime's refusal."""
        try:
            if not self.begin(sub, task):
                return ""  # cancelled before it started
        except _STORE_ERRORS as exc:  # its own folder cannot be reached: its jobs hear it (kept in memory)
            why = f"the {self.kind} supervisor cannot reach its job folder {sub.url}: {exc}"
            self.finish(task, "FAILED", why, [])
            return why if reply_errors else ""
        try:
            self.start_task(task, wait=reply_errors)
        except Exception as exc:
            message = str(getattr(exc, "explanation", None) or exc)
            self.start_failed(task, message)
            return message if reply_errors else ""
        return ""

    def started(self, task: Task) -> None:
        """The backend started every rank of ``task`` (its handles are set)."""
        task.phase = "running"
        record = {"handles": task.handles, "start": task.start, "attempt": task.attempt, "supervisor": os.getpid()}
        self.record(task, lambda: task.sub.folder.write_run(task.name, record))
        if task.sub.folder.read_exit(task.name) is not None:  # cancelled while it started
            self.signal_task(task, signal.SIGKILL)

    def start_failed(self, task: Task, why: str) -> None:
        logger.warning("task %s of %s did not start: %s", task.name, task.sub.url, why)
        task.sub.running.pop(task.index, None)
        self.finish(task, "FAILED", f"it did not start: {why}", [])

    # -- ending ---------------------------------------------------------------------------------------
    def task_ended(self, task: Task, end: TaskEnd) -> None:
        """Every rank of ``task`` ended: run it again (checkpointed) or record how it ended."""
        sub = task.sub
        sub.running.pop(task.index, None)
        task.phase = "ended"
        requeue = (
            REQUEUE_EXIT_CODE in end.codes and not task.cancelled and not task.timed_out
            and task.attempt < MAX_ATTEMPTS and self.safely(lambda: sub.folder.take_requeue(int(task.name)), False)
        )
        if requeue:
            logger.info("running task %s of %s again (checkpointed)", task.name, sub.url)
            task.phase = "pending"
            sub.pending.appendleft(task)
            return
        state, reason = end_state(
            end, cancelled=task.cancelled, timed_out=task.timed_out, warned=task.warned, limit_s=sub.timeout_s
        )
        self.finish(task, state, reason, end.codes)

    def finish(self, task: Task, state: str, reason: str, codes: list[int | None]) -> None:
        """Record the end in the folder (first record wins); kept in memory if the folder refuses."""
        self.record(task, lambda: task.sub.folder.write_exit(task.name, state, reason, codes), (state, reason))
        self.maybe_done(task.sub)

    def record(self, task: Task, write: Any, end: tuple[str, str] | None = None) -> None:
        """Write to the task's folder; a full disk or a deleted folder must not stop the supervisor."""
        try:
            write()
        except _STORE_ERRORS as exc:
            logger.warning("cannot record task %s of %s: %s", task.name, task.sub.url, exc)
            if end is not None:  # clients still learn how it ended, and why it is not recorded
                state, reason = end
                note = f"its job folder cannot be written ({getattr(exc, 'strerror', None) or exc})"
                task.sub.unrecorded[task.name] = (state, f"{reason}; {note}" if reason else note)

    @staticmethod
    def safely(fn: Any, default: Any) -> Any:
        try:
            return fn()
        except _STORE_ERRORS as exc:
            logger.warning("%s", exc)
            return default

    def maybe_done(self, sub: Submission) -> None:
        if not sub.pending and not sub.running and not sub.unrecorded:
            self.drop(sub)

    def drop(self, sub: Submission) -> None:
        self.subs.pop(sub.url, None)
        sub.lock.close()
        self.last_activity = time.monotonic()

    def forget_unrecorded(self) -> None:
        """Ends kept in memory for a folder that could not be written are kept an hour."""
        now = time.monotonic()
        for sub in list(self.subs.values()):
            if sub.unrecorded and not sub.pending and not sub.running and now - self.last_activity > UNRECORDED_KEEP_S:
                sub.unrecorded.clear()
                self.drop(sub)

    # -- cancelling and deadlines ---------------------------------------------------------------------
    def cancel(self, url: str, name: str | None) -> bool:
        """Cancel one task (``name``) or all of a submission; False if it is not held here."""
        sub = self.subs.get(url)
        if sub is None:
            return False
        for task in [t for t in sub.pending if name is None or t.name == name]:
            sub.pending.remove(task)
            task.cancelled = True
            self.finish(task, "CANCELLED", "cancelled by the user", [])
        for task in list(sub.running.values()):
            if name is None or task.name == name:
                task.cancelled = True
                self.record(task, lambda t=task: t.sub.folder.write_exit(t.name, "CANCELLED", "cancelled by the user"))
                self.kill(task, signal.SIGTERM)
        return True

    def kill(self, task: Task, sig: signal.Signals) -> None:
        if task.phase == "running":
            self.signal_task(task, sig)
        if sig != signal.SIGKILL and task.kill_at is None:
            task.kill_at = time.time() + KILL_GRACE_S

    def next_deadline(self) -> float | None:
        times = []
        for sub in self.subs.values():
            for task in sub.running.values():
                if task.kill_at is not None:
                    times.append(task.kill_at)
                elif sub.timeout_s is not None and not task.timed_out:
                    warn = 0.0 if task.warned else warning_delay_s(float(sub.spec.get("signal_delay_s", 90)), sub.timeout_s)
                    times.append(task.start + sub.timeout_s - warn)
        return min(times) if times else None

    def check_deadlines(self) -> None:
        """The deadline ladder: the checkpoint signal, then SIGTERM at the limit, then SIGKILL."""
        now = time.time()
        for sub in list(self.subs.values()):
            limit = sub.timeout_s
            for task in list(sub.running.values()):
                if task.phase != "running":
                    continue
                if task.kill_at is not None and now >= task.kill_at:
                    self.signal_task(task, signal.SIGKILL)
                    task.kill_at = now + 3600  # once; the end is seen by watch()
                if limit is None or task.timed_out:
                    continue
                delay = warning_delay_s(float(sub.spec.get("signal_delay_s", 90)), limit)
                if not task.warned and now >= task.start + limit - delay:
                    task.warned = True
                    self.signal_task(task, signal.SIGUSR2)  # rank 0 checkpoints, if it can
                if now >= task.start + limit:
                    task.timed_out = True
                    why = f"time limit of {limit / 60:g} min (timeout_min) reached"
                    self.record(task, lambda t=task, w=why: t.sub.folder.write_exit(t.name, "TIMEOUT", w))
                    self.kill(task, signal.SIGTERM)

    # -- the loop -----------------------------------------------------------------------------------------
    def busy(self) -> bool:
        return any(s.running or s.pending for s in self.subs.values())

    def serve_forever(self, sock_path: str, idle_exit_s: float, idle_timeout: float) -> None:
        """Serve until idle for ``idle_exit_s``; then leave without dropping a request.

        The socket is unlinked first, so a client that comes now starts a
        fresh supervisor; requests already queued are answered, and what they
        (or anything else) left running is seen to its end without a socket.
        """
        self.listen(sock_path)
        logger.info("%s supervisor serving on %s (pid %d)", self.kind, sock_path, os.getpid())
        while True:
            self.step(idle_timeout)
            if not self.busy() and not self.conns and time.monotonic() - self.last_activity > idle_exit_s:
                break
        logger.info("idle for %.0f s, leaving", idle_exit_s)
        self.leave()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock_path)
        while self.drain() or self.busy():
            self.step(min(idle_timeout, 0.05))

    def leave(self) -> None:
        """Called once when the supervisor stops taking submissions (idle): let go of what it keeps ready."""

    def step(self, idle_timeout: float) -> None:
        timeout = idle_timeout
        if any(t.waits_for for s in self.subs.values() for t in s.pending):
            timeout = min(timeout, HOLD_CHECK_S)
        deadline = self.next_deadline()
        if deadline is not None:
            timeout = max(0.0, min(timeout, deadline - time.time()))
        self.serve_ready(timeout)
        for action in (self.watch, self.check_deadlines, self.start_pending, self.forget_unrecorded):
            try:
                action()
            except Exception:  # report, don't die: every other submission still needs this loop
                logger.exception("%s failed", action.__name__)


class _Unreachable(Exception):
    """A task's upstream folder cannot be looked at, for good: the message says which and why."""


class _Upstreams:
    """What one round of hold checks knows of the upstream folders: a listing of each one's results
    and exit records, taken once per folder (a thousand tasks waiting on one job cost one look)."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[set[str], set[str]] | None] = {}

    def ended(self, url: str, index: int, ranks: list[int], env: dict[str, str] | None = None) -> bool:
        """``env``: the SDK environment of the submission that waits (``Submission.store_env``)."""
        if url not in self._seen:
            folder = JobFolder.from_url(url, env=env)
            if folder.exists():
                self._seen[url] = (folder.result_names(), folder.ended())
            else:
                self._seen[url] = None  # deleted: the worker says so when it reads it
        seen = self._seen[url]
        if seen is None:
            return True
        results, ended = seen
        return all(f"{index}.{rank}.pkl" in results for rank in ranks) or str(index) in ended
