"""The local backend's fork server: ``python -m jobsub.backends.local.server SOCKET``.

Started detached (its own session) by the first local submission and shared
by every process of the same user and Python; it survives the submitting
process, so jobs keep running and can be re-attached.  jobsub and
cloudpickle are imported once here, and every task is a ``fork()`` of this
warm process that calls the worker in-process: no interpreter start per job.

::

    client: local/spec.json, then {"op": "adopt"} ──> server (a _supervisor.Supervisor):
        queue, dependencies, deadlines, requeue, the end -> state rule: shared with Docker
        fork() per rank ──> child: own process group, chdir, env, sys.path, worker.main(argv)
          (a one-rank task's child is a runner: it reports "<i> <code>" on its socket and, when
           the task was short and left nothing behind, runs the next task it is sent: runner.py;
           one runner is kept forked ahead of need, so a submission's first task waits for no fork)
        SIGCHLD ──> waitpid ──> exit/<i>.json
        mem_gb: the RSS of each task's process groups, summed from /proc every 0.25 s;
                over the limit, SIGKILL and OUT_OF_MEMORY (what a cgroup would do)

A server that died leaves nothing lost: the next client finds the
submission unsupervised and its own server adopts it, running what had not
started and watching (by pid and start time) what still runs.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

from ... import worker
from .._daemon import run_daemon
from .._supervisor import Submission, Supervisor, Task, TaskEnd
from .procs import alive, kill_group, rss_by_process_group, start_time
from .runner import REUSE_MAX_S, blocked_fraction_help, run_first_sent, run_in_child

logger = logging.getLogger("jobsub.localserver")

IDLE_EXIT_S = float(os.environ.get("JOBSUB_LOCAL_IDLE_S", "600"))
MEM_CHECK_S = 0.25
ORPHAN_CHECK_S = 0.25
PRELOAD = ("cloudpickle", "jobsub.states", "ctypes")
"""What children import, imported once here so that every fork inherits it: unpickling any
function pickled by value (from __main__, a lambda, a notebook) needs cloudpickle, and with it
platform, uuid and ~450 regular expressions, ~10 ms of CPU per task imported again in each child;
a runner reads the C library's environment through ctypes (runner.FreshState)."""
RAMP_S = 0.05
"""How often a reusing submission's window of runners may double (see ``limit``)."""
MAX_RUNNERS = 400
"""Runners alive at once: each holds a socket here, and select() takes descriptors below 1024."""


SPARE_RETRY_S = 1.0
"""How long after a spare runner died unused before another is forked (no fork loop if they all die)."""


@dataclass(eq=False)
class Spare:
    """A runner forked ahead of need, waiting on its socket for its first task."""

    pid: int
    started: int | None
    sock: socket.socket


@dataclass(eq=False)
class Runner:
    """The server's side of a reused child: its socket and the task it runs (None: between tasks)."""

    pid: int
    started: int | None
    sock: socket.socket
    sub: Submission
    task: Task | None = None
    buffer: bytes = b""


class LocalServer(Supervisor):
    """Starts each rank of a task as a forked child of this process (or hands it to a runner)."""

    kind = "local"

    def __init__(self) -> None:
        super().__init__()
        self.by_pid: dict[int, tuple[Task, int]] = {}
        self.codes: dict[Task, dict[int, tuple[int | None, int | None]]] = {}  # rank -> (code, signal)
        self.runners: dict[int, Runner] = {}  # by the server's descriptor of its socket
        self.spare: Spare | None = None
        self.next_spare_at = 0.0
        self.leaving = False
        self.last_memory_check = 0.0
        self.last_orphan_check = 0.0
        self.next_cpu = 0

    def serve(self, sock_path: str) -> None:
        for name in PRELOAD:  # before any fork
            try:
                importlib.import_module(name)
            except ImportError:  # pragma: no cover - cloudpickle is a dependency
                logger.warning("could not preload %s", name)
        self.listen(sock_path)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.serve_forever(sock_path, IDLE_EXIT_S, idle_timeout=1.0)

    # -- starting and signalling ----------------------------------------------------------------
    def start_task(self, task: Task, wait: bool) -> None:
        self.codes[task] = {}
        task.scratch["cpus"] = self.cpus_for(int(task.sub.spec.get("cpus_per_task") or 0))
        if self.reuses(task.sub) and len(self.runners) < MAX_RUNNERS:
            self.start_runner(task)
        else:
            for rank in range(task.sub.ranks):
                self.fork(task, rank, lambda t=task, r=rank: self.child(t, r))
        self.started(task)

    @staticmethod
    def reuses(sub: Submission) -> bool:
        """Whether ``sub``'s tasks may share runners: one rank, no shell lines, no other interpreter."""
        spec = sub.spec
        return bool(spec.get("reuse")) and sub.ranks == 1 and not spec.get("setup") and not spec.get("python")

    @staticmethod
    def fork_group(body: Any) -> int:
        """Fork a child that runs ``body`` (which never returns) as the leader of its own group."""
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            body()
        # the child makes itself a group leader too; doing it here as well means the group
        # exists before anyone reads the run record and signals it (whichever runs first)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        return pid

    def fork(self, task: Task, rank: int, body: Any) -> int:
        pid = self.fork_group(body)
        task.handles[rank] = [pid, start_time(pid)]
        self.by_pid[pid] = (task, rank)
        return pid

    def signal_task(self, task: Task, sig: signal.Signals) -> None:
        ended = self.codes.get(task, {})
        for rank, (pid, started) in task.handles.items():
            if rank not in ended:
                kill_group(pid, sig, started)

    def detach(self, cpus: list[int]) -> None:  # pragma: no cover - runs in the child
        """What a fresh child drops of the server: its group, signal handlers, every descriptor."""
        os.setpgid(0, 0)  # its own group: a kill reaches the subprocesses it starts
        if cpus:  # cpus_per_task: these CPUs, not every one of the machine
            os.sched_setaffinity(0, cpus)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGUSR2, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)

    def child(self, task: Task, rank: int) -> None:  # pragma: no cover - runs in the child
        code = 1
        try:
            self.detach(task.scratch.get("cpus") or [])
            # nothing of the server's stays open in a task: not its socket, nor the locks it holds
            # on submissions and on its own life (a process the task leaves behind would keep them)
            os.closerange(3, 65536)
            code = run_in_child(task.sub.spec, task.sub.env, task.sub.folder.key, task.name, rank)
        finally:
            os._exit(code)

    # -- runners: one process, one task after another ----------------------------------------------
    def start_runner(self, task: Task) -> None:
        """Hand ``task`` to the spare runner, or to one forked now if there is none (or it died)."""
        spare, self.spare = self.spare, None
        if spare is not None and not alive(spare.pid, spare.started):  # killed, not reaped yet
            spare.sock.close()
            spare = None
        if spare is None:
            spare = self.fork_spare()
        task.handles[0] = [spare.pid, spare.started]
        self.by_pid[spare.pid] = (task, 0)
        runner = Runner(spare.pid, spare.started, spare.sock, task.sub, task)
        self.runners[spare.sock.fileno()] = runner
        self.watched[spare.sock.fileno()] = functools.partial(self.runner_said, runner)
        sub = task.sub
        first = {"spec": sub.spec, "env": sub.env, "key": sub.folder.key, "offset": sub.offset,
                 "index": task.index, "cpus": task.scratch.get("cpus") or []}
        try:
            spare.sock.sendall(json.dumps(first).encode() + b"\n")
        except OSError:  # it died meanwhile: reap() ends the task, as for any runner that dies
            self.drop_runner(runner)

    def fork_spare(self) -> Spare:
        """A child that drops what it holds of the server, then waits for its first task (``run_first_sent``)."""
        ours, theirs = socket.socketpair()

        def body() -> None:  # pragma: no cover - runs in the spare
            code = 1
            try:
                self.detach([])
                keep = theirs.detach()
                os.closerange(3, keep)
                os.closerange(keep + 1, 65536)
                code = run_first_sent(keep)
            finally:
                os._exit(code)

        pid = self.fork_group(body)
        theirs.close()
        return Spare(pid, start_time(pid), ours)

    def start_pending(self) -> None:
        super().start_pending()
        # the next submission's first task then starts without waiting for a fork
        if self.spare is None and not self.leaving and time.monotonic() >= self.next_spare_at:
            self.spare = self.fork_spare()

    def leave(self) -> None:
        """No more submissions: the spare runner is told so (it reads the end of its socket and exits)."""
        self.leaving = True
        if self.spare is not None:
            self.spare.sock.close()
            self.spare = None

    def runner_said(self, runner: Runner) -> None:
        """A runner finished its task ("<index> <code> <wall> <blocked>") and waits for the next, or it left."""
        try:
            data = runner.sock.recv(4096)
        except OSError:
            data = b""
        if not data:  # it exited: reap() accounts for a task it was running
            self.drop_runner(runner)
            return
        runner.buffer += data
        while b"\n" in runner.buffer:
            line, runner.buffer = runner.buffer.split(b"\n", 1)
            index, code, wall_us, blocked_us = map(int, line.split())
            task = runner.task
            if task is None or task.index != index:
                continue
            runner.sub.scratch["reported_s"] = runner.sub.scratch.get("reported_s", 0.0) + wall_us / 1e6
            runner.sub.scratch["blocked_s"] = runner.sub.scratch.get("blocked_s", 0.0) + blocked_us / 1e6
            runner.task = None
            self.by_pid.pop(runner.pid, None)  # the process no longer stands for this task
            # the runner waits: send it the next task first, write the records after
            following = self.next_for(runner, task)
            if following is not None:
                self.started(following)  # before the end: the submission must not look finished
            self.codes[task] = {0: (code, None)}
            self.end(task)

    def next_for(self, runner: Runner, previous: Task) -> Task | None:
        """Send the runner the next ready task of its submission (returned), or tell it to leave."""
        sub = runner.sub
        # a runner that was signalled (time limit, cancel, memory) may be dying: never reuse it
        clean = not (previous.warned or previous.timed_out or previous.cancelled or previous.kill_at is not None
                     or previous.scratch.get("oom") or sub.url not in self.subs)
        task = None
        if clean and self.slots_used(sub) <= self.limit(sub):  # previous still holds the slot it passes on
            while (candidate := self.next_ready(sub)) is not None:
                if self.begin(sub, candidate):
                    task = candidate
                    break
        if task is not None:
            self.codes[task] = {}
            task.handles[0] = [runner.pid, runner.started]
            self.by_pid[runner.pid] = (task, 0)
            runner.task = task
        try:
            runner.sock.sendall(f"{task.index}\n".encode() if task is not None else b"\n")
        except OSError:  # it died meanwhile: reap() ends the task it was sent
            self.drop_runner(runner)
        if task is None:
            self.drop_runner(runner)
        return task

    def drop_runner(self, runner: Runner) -> None:
        fd = runner.sock.fileno()
        if fd >= 0:
            self.watched.pop(fd, None)
            self.runners.pop(fd, None)
            runner.sock.close()

    def limit(self, sub: Submission) -> int:
        """How many tasks of ``sub`` may run at once now.

        A reusing submission starts with a window of one runner per CPU: 256
        runners for 1,000 tiny tasks are 256 forks fighting for 2 cores, where
        2 would do.  At most every ``RAMP_S`` while tasks wait, the window
        doubles (up to ``array_parallelism``) if the tasks reported since were
        blocked more than half their time (sleeping, waiting on I/O): more
        processes help those.  A task running longer than ``REUSE_MAX_S``
        opens it at once: long tasks get a process each, as without reuse.
        """
        if not self.reuses(sub):
            return sub.parallelism
        window = sub.scratch.setdefault("window", min(sub.parallelism, len(os.sched_getaffinity(0))))
        now = time.monotonic()
        judged = sub.scratch.setdefault("window_at", now)
        if window >= sub.parallelism or not sub.pending or self.slots_used(sub) < window or now - judged < RAMP_S:
            return int(window)
        if any(time.time() - t.start > REUSE_MAX_S for t in sub.running.values() if t.phase == "running"):
            window = sub.parallelism
        elif sub.scratch.get("reported_s"):
            if blocked_fraction_help(sub.scratch["reported_s"], sub.scratch.get("blocked_s", 0.0)):
                window = min(sub.parallelism, 2 * window)
            sub.scratch.update(window_at=now, reported_s=0.0, blocked_s=0.0)
        sub.scratch["window"] = window
        return int(window)

    def cpus_for(self, wanted: int) -> list[int]:
        """``wanted`` CPUs of this machine for the next task, taken in turn (none: no pinning)."""
        available = sorted(os.sched_getaffinity(0))
        if not wanted or wanted >= len(available):
            return []
        start = self.next_cpu % len(available)
        self.next_cpu = start + wanted
        return [available[(start + i) % len(available)] for i in range(wanted)]

    # -- watching ---------------------------------------------------------------------------------
    def watch(self) -> None:
        self.reap()
        self.check_orphans()
        self.check_memory()

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            entry = self.by_pid.pop(pid, None)
            for runner in [r for r in self.runners.values() if r.pid == pid]:
                self.drop_runner(runner)
            if self.spare is not None and self.spare.pid == pid:  # it died unused (killed)
                self.spare.sock.close()
                self.spare = None
                self.next_spare_at = time.monotonic() + SPARE_RETRY_S
            if entry is None:
                continue
            task, rank = entry
            code = os.waitstatus_to_exitcode(status)
            self.codes[task][rank] = (code, -code if code < 0 else None)
            # what the rank left behind in its group (a server it started, a pool) ends with it
            kill_group(pid, signal.SIGKILL)
            if len(self.codes[task]) == len(task.handles):
                self.end(task)

    def end(self, task: Task) -> None:
        ranks = self.codes.pop(task)
        codes = [ranks[r][0] if r in ranks else None for r in range(task.sub.ranks)]
        signals = [ranks[r][1] if r in ranks else None for r in range(task.sub.ranks)]
        self.task_ended(task, TaskEnd(codes, signals, oom=task.scratch.get("oom", ""), vanished=task.scratch.get("vanished", "")))

    def rebuild_task(self, task: Task, run: dict[str, Any]) -> bool:
        """An adopted task recorded as started: watched by pid and start time from now on."""
        task.handles = {int(rank): list(h) for rank, h in run.get("handles", {}).items()}
        task.scratch["orphan"] = True
        self.codes[task] = {}
        return bool(task.handles)

    def check_orphans(self) -> None:
        """Adopted tasks are not this process's children: see them end by their pids vanishing."""
        now = time.monotonic()
        if now - self.last_orphan_check < ORPHAN_CHECK_S:
            return
        self.last_orphan_check = now
        for sub in list(self.subs.values()):
            for task in list(sub.running.values()):
                if not task.scratch.get("orphan") or any(alive(pid, started) for pid, started in task.handles.values()):
                    continue
                folder, index = sub.folder, int(task.name)
                finished = all(folder.has_result(index, r) for r in range(sub.ranks))
                requeue = not finished and folder.storage.exists(f"{folder.key}/requeue/{index}")
                code = 0 if finished else worker.REQUEUE_EXIT_CODE if requeue else None
                self.codes[task] = {r: (code, None) for r in range(sub.ranks)} if code is not None else {}
                if code is None:
                    task.scratch["vanished"] = (
                        "its process ended without a result while no local job server watched it "
                        "(the server was stopped or killed)"
                    )
                self.end(task)

    def check_memory(self) -> None:
        """Kill the tasks whose processes hold more than ``mem_gb`` together, as a cgroup would."""
        now = time.monotonic()
        if now - self.last_memory_check < MEM_CHECK_S:
            return
        self.last_memory_check = now
        watched = [t for s in self.subs.values() for t in s.running.values() if s.spec.get("mem_limit") and not t.scratch.get("oom")]
        # each rank leads its own process group (child() calls setpgid)
        groups = {pid for t in watched for pid, _ in t.handles.values()}
        if not groups:
            return
        rss = rss_by_process_group(groups)
        for task in watched:
            held = sum(rss.get(pid, 0) for pid, _ in task.handles.values())
            limit = int(task.sub.spec["mem_limit"])
            if held > limit:
                logger.info("task %s of %s holds %d bytes, over %d: killing it", task.name, task.sub.url, held, limit)
                task.scratch["oom"] = (
                    f"its processes held {held / 2**20:.0f} MiB, over the memory limit of {limit / 2**20:.0f} MiB "
                    f"(mem_gb); the local backend checks every {MEM_CHECK_S:g} s"
                )
                self.signal_task(task, signal.SIGKILL)


def main() -> None:
    sock_path = sys.argv[1]
    run_daemon(sock_path, lambda: LocalServer().serve(sock_path))


if __name__ == "__main__":
    main()
