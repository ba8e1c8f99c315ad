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
        SIGCHLD ──> waitpid ──> exit/<i>.json
        mem_gb: the RSS of each task's process groups, summed from /proc every 0.25 s;
                over the limit, SIGKILL and OUT_OF_MEMORY (what a cgroup would do)

A server that died leaves nothing lost: the next client finds the
submission unsupervised and its own server adopts it, running what had not
started and watching (by pid and start time) what still runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import sys
import time
import traceback
from typing import Any

from ... import worker
from .._daemon import run_daemon
from .._supervisor import Supervisor, Task, TaskEnd
from .procs import alive, kill_group, rss_by_process_group, start_time

logger = logging.getLogger("jobsub.localserver")

IDLE_EXIT_S = float(os.environ.get("JOBSUB_LOCAL_IDLE_S", "600"))
MEM_CHECK_S = 0.25
ORPHAN_CHECK_S = 0.25


class LocalServer(Supervisor):
    """Starts each rank of a task as a forked child of this process."""

    kind = "local"

    def __init__(self) -> None:
        super().__init__()
        self.by_pid: dict[int, tuple[Task, int]] = {}
        self.codes: dict[Task, dict[int, tuple[int, int | None]]] = {}  # rank -> (code, signal)
        self.last_memory_check = 0.0
        self.last_orphan_check = 0.0
        self.next_cpu = 0

    def serve(self, sock_path: str) -> None:
        self.listen(sock_path)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.serve_forever(sock_path, IDLE_EXIT_S, idle_timeout=1.0)

    # -- starting and signalling ----------------------------------------------------------------
    def start_task(self, task: Task, wait: bool) -> None:
        self.codes[task] = {}
        task.scratch["cpus"] = self.cpus_for(int(task.sub.spec.get("cpus_per_task") or 0))
        for rank in range(task.sub.ranks):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                self.child(task, rank)
            # the child makes itself a group leader too; doing it here as well means the group
            # exists before anyone reads the run record and signals it (whichever runs first)
            with contextlib.suppress(OSError):
                os.setpgid(pid, pid)
            task.handles[rank] = [pid, start_time(pid)]
            self.by_pid[pid] = (task, rank)
        self.started(task)

    def signal_task(self, task: Task, sig: signal.Signals) -> None:
        ended = self.codes.get(task, {})
        for rank, (pid, started) in task.handles.items():
            if rank not in ended:
                kill_group(pid, sig, started)

    def child(self, task: Task, rank: int) -> None:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.setpgid(0, 0)  # its own group: a kill reaches the subprocesses it starts
            if task.scratch.get("cpus"):  # cpus_per_task: these CPUs, not every one of the machine
                os.sched_setaffinity(0, task.scratch["cpus"])
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGUSR2, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            # nothing of the server's stays open in a task: not its socket, nor the locks it holds
            # on submissions and on its own life (a process the task leaves behind would keep them)
            os.closerange(3, 65536)
            logging.root.handlers.clear()
            spec = task.sub.spec
            os.chdir(spec["cwd"])
            os.environ.clear()
            os.environ.update(task.sub.env)  # the submitting process's environment (from its request)
            os.environ.update(spec["env"])  # the job's own variables
            os.environ.update(
                JOBSUB_ARRAY_TASK_ID=task.name,
                JOBSUB_GLOBAL_RANK=str(rank),
                JOBSUB_LOCAL_RANK=str(rank),
                JOBSUB_NUM_TASKS=str(task.sub.ranks),
                JOBSUB_NUM_NODES="1",
                JOBSUB_NODE="0",
                JOBSUB_RAW_JOB_ID=f"{task.sub.folder.key}_{task.name}" if spec["array"] else task.sub.folder.key,
                JOBSUB_ARRAY_JOB_ID=task.sub.folder.key if spec["array"] else "",
            )
            argv = spec["argv"]
            if spec.get("setup") or spec.get("python"):  # a fresh interpreter, after the shell lines
                python = spec.get("python") or shlex.quote(sys.executable)
                command = f"exec {python} " + shlex.join(["-m", "jobsub.worker", *argv])
                os.execv("/bin/bash", ["/bin/bash", "-c", "\n".join([*spec.get("setup", []), command])])
            sys.path[:] = spec["sys_path"]
            sys.argv = ["jobsub.worker", *argv]
            code = worker.main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            with contextlib.suppress(Exception):
                traceback.print_exc()
            code = 1
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code)

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
