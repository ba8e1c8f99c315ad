"""The local backend's fork server: ``python -m jobsub.backends.local.server SOCKET``.

Started detached (its own session) by the first local submission and shared
by every process of the same user and Python; it survives the submitting
process, so jobs keep running and can be re-attached.  jobsub and
cloudpickle are imported once here, and every task is a ``fork()`` of this
warm process that calls the worker in-process: no interpreter start per job.

::

    client ──JSON line──> server: queue tasks (array_parallelism at most running per submission)
                            │  fork() per rank ──> child: chdir, env, sys.path, worker.main(argv)
                            │  SIGCHLD ──> waitpid ──> exit/<i>.json   (COMPLETED/FAILED/TIMEOUT/CANCELLED)
                            ├─ deadlines: SIGUSR2 before the time limit, SIGTERM at it, SIGKILL after
                            └─ mem_gb: the RSS of each task's process groups, summed from /proc every
                               0.25 s; over the limit, SIGKILL and OUT_OF_MEMORY (what a cgroup does)

The server writes ``run/<i>.json`` when a task starts and ``exit/<i>.json``
when it ends, so the client reads states from the folder without asking.
It exits after a while with nothing to do.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import shlex
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from ... import worker
from ...folder import JobFolder
from .._daemon import JsonLineServer, run_daemon

logger = logging.getLogger("jobsub.localserver")

IDLE_EXIT_S = float(os.environ.get("JOBSUB_LOCAL_IDLE_S", "600"))
KILL_GRACE_S = 3.0
MEM_CHECK_S = 0.25
MAX_ATTEMPTS = 100  # safety net; the worker's own countdown limits checkpoint requeues


@dataclass
class Task:
    sub: Submission
    index: int  # index within the submission (the worker adds --offset itself)
    pids: dict[int, int] = field(default_factory=dict)  # rank -> pid
    codes: dict[int, int] = field(default_factory=dict)  # rank -> exit code
    start: float = 0.0
    attempt: int = 0
    signalled: bool = False
    timed_out: bool = False
    cancelled: bool = False
    kill_at: float | None = None
    rss_over: int = 0  # bytes held when killed for exceeding mem_gb (0: not killed for that)

    @property
    def name(self) -> str:
        return str(self.index + self.sub.offset)


@dataclass
class Submission:
    key: str
    folder: JobFolder
    argv: list[str]
    env: dict[str, str]
    cwd: str
    sys_path: list[str]
    n: int
    ranks: int
    array: bool
    offset: int
    timeout_s: float | None
    signal_delay_s: float
    parallelism: int
    setup: list[str]
    mem_limit: int | None = None  # bytes, all ranks of a task together (mem_gb is per node)
    pending: collections.deque[Task] = field(default_factory=collections.deque)
    running: int = 0


class Server(JsonLineServer):
    def __init__(self, sock_path: str) -> None:
        self.sock_path = sock_path
        self.subs: dict[str, Submission] = {}
        self.by_pid: dict[int, tuple[Task, int]] = {}
        self.tasks_running: list[Task] = []
        self.last_memory_check = 0.0
        super().__init__()

    # -- life cycle -------------------------------------------------------------------
    def serve(self) -> None:
        if os.path.exists(self.sock_path):
            os.unlink(self.sock_path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.sock_path)
        os.chmod(self.sock_path, 0o600)
        self.listener.listen(64)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        logger.info("serving on %s (pid %d)", self.sock_path, os.getpid())
        while True:
            self.step()
            busy = self.tasks_running or self.conns or any(s.pending for s in self.subs.values())
            if not busy and time.monotonic() - self.last_activity > IDLE_EXIT_S:
                logger.info("idle for %.0f s, exiting", IDLE_EXIT_S)
                return

    def step(self) -> None:
        timeout = 0.05 if self.tasks_running else 1.0
        self.serve_ready(timeout)
        self.reap()
        self.check_deadlines()
        self.check_memory()
        self.start_pending()

    # -- requests ------------------------------------------------------------------------
    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "submit":
            sub = Submission(
                key=req["id"],
                folder=JobFolder.from_url(req["folder"]),
                argv=req["argv"],
                env=req["env"],
                cwd=req["cwd"],
                sys_path=req["sys_path"],
                n=req["n"],
                ranks=req["ranks"],
                array=req["array"],
                offset=req.get("offset", 0),
                timeout_s=req.get("timeout_s"),
                signal_delay_s=req.get("signal_delay_s", 90),
                parallelism=req.get("parallelism") or 256,
                setup=req.get("setup", []),
                mem_limit=req.get("mem_limit"),
            )
            sub.pending.extend(Task(sub, i) for i in range(sub.n))
            self.subs[sub.key] = sub
            return {"ok": True}  # reply first: the loop forks the tasks right after
        if op == "cancel":
            unknown = [job_id for job_id in req["ids"] if not self.cancel(job_id)]
            return {"ok": True, "unknown": unknown}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def cancel(self, job_id: str) -> bool:
        """Cancel a job or a whole array; False if this server does not hold it (ended, or never here)."""
        key, sep, index = job_id.partition("_")
        sub = self.subs.get(key)
        if sub is None:
            return False
        wanted = None if not sep else int(index)
        for task in [t for t in sub.pending if wanted is None or t.index == wanted]:
            sub.pending.remove(task)
            task.cancelled = True
            self.finish(task)
        for task in self.tasks_running:
            if task.sub is sub and (wanted is None or task.index == wanted):
                task.cancelled = True
                self.kill(task, signal.SIGTERM)
        return True

    # -- running tasks ---------------------------------------------------------------------
    def start_pending(self) -> None:
        for sub in self.subs.values():
            while sub.pending and sub.running < sub.parallelism:
                self.launch(sub.pending.popleft())

    def launch(self, task: Task) -> None:
        sub = task.sub
        task.start = time.time()
        task.attempt += 1
        task.signalled = False
        task.pids.clear()
        task.codes.clear()
        for rank in range(sub.ranks):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                self.child(task, rank)
            task.pids[rank] = pid
            self.by_pid[pid] = (task, rank)
        sub.running += 1
        self.tasks_running.append(task)
        sub.folder.write_marker(
            "run", f"{task.name}.json",
            json.dumps({"pids": list(task.pids.values()), "start": task.start, "attempt": task.attempt, "server": os.getpid()}).encode(),
        )

    def child(self, task: Task, rank: int) -> None:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.setpgid(0, 0)  # its own group: a kill reaches the subprocesses it starts
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGUSR2, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            self.listener.close()
            for conn in self.conns:
                conn.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            logging.root.handlers.clear()
            sub = task.sub
            os.chdir(sub.cwd)
            os.environ.clear()
            os.environ.update(sub.env)
            os.environ.update(
                JOBSUB_ARRAY_TASK_ID=str(task.index),
                JOBSUB_GLOBAL_RANK=str(rank),
                JOBSUB_LOCAL_RANK=str(rank),
                JOBSUB_NUM_TASKS=str(sub.ranks),
                JOBSUB_NUM_NODES="1",
                JOBSUB_NODE="0",
                JOBSUB_RAW_JOB_ID=sub.key if not sub.array else f"{sub.key}_{task.index}",
                JOBSUB_ARRAY_JOB_ID=sub.key if sub.array else "",
            )
            if sub.setup:  # shell lines first: run the worker in a fresh interpreter after them
                script = "\n".join([*sub.setup, "exec " + shlex.join([sys.executable, "-m", "jobsub.worker", *sub.argv])])
                os.execv("/bin/bash", ["/bin/bash", "-c", script])
            sys.path[:] = sub.sys_path
            sys.argv = ["jobsub.worker", *sub.argv]
            code = worker.main(sub.argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            entry = self.by_pid.pop(pid, None)
            if entry is None:
                continue
            task, rank = entry
            task.codes[rank] = os.waitstatus_to_exitcode(status)
            if len(task.codes) == len(task.pids):
                self.tasks_running.remove(task)
                task.sub.running -= 1
                if (
                    worker.REQUEUE_EXIT_CODE in task.codes.values()
                    and not task.cancelled
                    and task.attempt < MAX_ATTEMPTS
                ):
                    logger.info("requeueing %s task %s", task.sub.key, task.name)
                    task.sub.pending.appendleft(task)
                else:
                    self.finish(task)

    def finish(self, task: Task) -> None:
        codes = [task.codes.get(r) for r in range(task.sub.ranks)]
        if task.cancelled:
            state, reason = "CANCELLED", "cancelled by the user"
        elif task.rss_over:
            limit = task.sub.mem_limit or 0
            state, reason = "OUT_OF_MEMORY", (
                f"its processes held {task.rss_over / 2**20:.0f} MiB, over the memory limit of "
                f"{limit / 2**20:.0f} MiB (mem_gb); the local backend checks every {MEM_CHECK_S:g} s"
            )
        elif task.timed_out or (task.signalled and any(c not in (0, None) for c in codes)):
            state, reason = "TIMEOUT", f"time limit of {task.sub.timeout_s:g} s reached"
        elif all(c == 0 for c in codes):
            state, reason = "COMPLETED", ""
        elif worker.DEPENDENCY_FAILED_EXIT_CODE in codes:
            state, reason = "CANCELLED", "a dependency failed (its result file says which)"
        else:
            bad = next(c for c in codes if c != 0)
            if bad is not None and bad < 0:
                name = signal.Signals(-bad).name
                hint = " (the kernel's out-of-memory killer sends SIGKILL)" if bad == -signal.SIGKILL else ""
                state, reason = "FAILED", f"killed by {name}{hint}"
            else:
                state, reason = "FAILED", f"exit code {bad}"
        task.sub.folder.write_exit(task.name, state, reason, codes)
        sub = task.sub
        if not sub.pending and sub.running == 0 and all(
            t.sub is not sub for t in self.tasks_running
        ):
            self.subs.pop(sub.key, None)

    def check_deadlines(self) -> None:
        now = time.time()
        for task in list(self.tasks_running):
            sub = task.sub
            if task.kill_at is not None and now >= task.kill_at:
                self.kill(task, signal.SIGKILL)
                task.kill_at = None
            if sub.timeout_s is None or task.timed_out:
                continue
            warn_at = task.start + sub.timeout_s - min(sub.signal_delay_s, sub.timeout_s / 2)
            if not task.signalled and now >= warn_at and 0 in task.pids:
                task.signalled = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(task.pids[0], signal.SIGUSR2)
            if now >= task.start + sub.timeout_s:
                task.timed_out = True
                self.kill(task, signal.SIGTERM)

    def check_memory(self) -> None:
        """Kill the tasks whose processes hold more than ``mem_gb`` together, as a cgroup would."""
        now = time.monotonic()
        if now - self.last_memory_check < MEM_CHECK_S:
            return
        self.last_memory_check = now
        watched = [t for t in self.tasks_running if t.sub.mem_limit and not t.rss_over]
        # each rank leads its own process group (child() calls setpgid)
        groups = {pid for t in watched for rank, pid in t.pids.items() if rank not in t.codes}
        if not groups:
            return
        rss = _rss_by_process_group(groups)
        for task in watched:
            held = sum(rss.get(pid, 0) for pid in task.pids.values())
            limit = task.sub.mem_limit or 0
            if held > limit:
                logger.info("task %s of %s holds %d bytes, over %d: killing it", task.name, task.sub.key, held, limit)
                task.rss_over = held
                self.kill(task, signal.SIGKILL)

    def kill(self, task: Task, sig: signal.Signals) -> None:
        for rank, pid in task.pids.items():
            if rank in task.codes:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
        if sig != signal.SIGKILL:
            task.kill_at = time.time() + KILL_GRACE_S


def _rss_by_process_group(groups: set[int]) -> dict[int, int]:
    """Resident bytes of every process in ``groups``, summed per group (one pass over /proc)."""
    page = os.sysconf("SC_PAGE_SIZE")
    totals = dict.fromkeys(groups, 0)
    try:
        entries = os.listdir("/proc")
    except FileNotFoundError:  # not Linux: nothing to measure with
        return totals
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # it ended meanwhile
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()  # the command name may hold spaces
        group = int(fields[2])
        if group in totals:
            totals[group] += int(fields[21]) * page
    return totals


def main() -> None:
    sock_path = sys.argv[1]
    run_daemon(sock_path, lambda: Server(sock_path).serve())


if __name__ == "__main__":
    main()
