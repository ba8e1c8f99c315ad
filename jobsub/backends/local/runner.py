"""What runs in the local server's children: one task, or (a *runner*) one task after another.

A fork costs the server ~0.5-1.5 ms and the child as much again in
copy-on-write faults and teardown, more than a trivial task itself.  So a
one-rank task's child may be a runner: it reports how its task ended on a
socket (``"<index> <code> <wall us> <blocked us>"``) and, when the task was
short (``REUSE_MAX_S``), returned or raised, and left no thread, child
process or pile of open files behind, runs the next task the server sends
(``"<index>"``; an empty line: exit).  Every task still has its own result,
logs (the worker redirects fds 1 and 2 for each), environment, run and exit
records, time limit and usage record; a task that crashes or is killed
takes only its runner down.  What a task changes of its process (resource
limits, the signal mask and handlers, interval timers, the nice value, CPU
affinity, variables set with ``os.putenv``) is put back as a fresh fork would
have it (``FreshState``); what cannot be put back (a lowered hard limit, a
new session or user) retires the runner.  Module-level state of imported
modules carries over, as in a process pool (``local_reuse_processes=False``
turns it off).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import signal
import sys
import time
import traceback
from typing import Any

from ... import worker

__all__ = ["REUSE_MAX_S", "blocked_fraction_help", "run_first_sent", "run_in_child", "run_tasks"]

REUSE_MAX_S = 1.0
"""A runner whose task took longer exits: past a second a fresh fork costs < 0.1 %, and a long
task is likelier to leave state behind."""
REUSE_MAX_TASKS = 1000
"""Tasks one runner runs at most, bounding what slow leaks (caches, fragmentation) add up to."""


def run_in_child(spec: dict[str, Any], env: dict[str, str], key: str, name: str, rank: int) -> int:  # pragma: no cover
    """Run one task in this (forked) process: its directory, environment and sys.path, then the worker."""
    code = 1
    try:
        logging.root.handlers.clear()
        os.chdir(spec["cwd"])
        _set_environ(
            {**env, **spec["env"]},
            JOBSUB_ARRAY_TASK_ID=name,
            JOBSUB_GLOBAL_RANK=str(rank),
            JOBSUB_LOCAL_RANK=str(rank),
            JOBSUB_NUM_TASKS=str(spec["ranks"]),
            JOBSUB_NUM_NODES="1",
            JOBSUB_NODE="0",
            JOBSUB_RAW_JOB_ID=f"{key}_{name}" if spec["array"] else key,
            JOBSUB_ARRAY_JOB_ID=key if spec["array"] else "",
        )
        argv = spec["argv"]
        if spec.get("setup") or spec.get("python"):  # a fresh interpreter, after the shell lines
            import shlex

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
    return code


def _set_environ(env: dict[str, str], **extra: str) -> None:  # pragma: no cover - in the child
    """Make ``os.environ`` exactly ``env`` plus ``extra``, changing only what differs.

    ``os.environ.clear()`` pops one item at a time and lists every key for
    each pop: quadratic, ~1 ms for 50 variables, the largest cost of a
    runner's task; between tasks of one array only a few variables differ.
    """
    wanted = {**env, **extra}
    current = dict(os.environ)
    for key in current.keys() - wanted.keys():
        del os.environ[key]
    for key, value in wanted.items():
        if current.get(key) != value:
            os.environ[key] = value


def run_tasks(
    spec: dict[str, Any], env: dict[str, str], key: str, offset: int, index: int, fd: int, fresh: FreshState
) -> int:  # pragma: no cover
    """A runner's life: task ``index``, then each task the server sends, while reuse is safe.

    ``fresh``: the process as it was before its first task, put back after each.
    Returns the exit code of the last task when the runner ends after it (the
    server learns it from waitpid, as for any child), or 0 when the server
    said there is nothing more to run.
    """
    tasks = 0
    descriptors = _open_descriptors()
    while True:
        start, busy = time.monotonic_ns(), _busy_ns()
        code = run_in_child(spec, env, key, str(index + offset), 0)
        wall, busy = time.monotonic_ns() - start, _busy_ns() - busy
        tasks += 1
        # put back what the task changed before saying it ended: a runner that cannot must exit now
        if not _may_run_another(code, wall / 1e9, tasks, descriptors) or not fresh.restore():
            return code
        # how long the task was blocked tells the server whether more runners help
        try:
            os.write(fd, f"{index} {code} {wall // 1000} {max(0, wall - busy) // 1000}\n".encode())
        except OSError:  # the server is gone: the task's result and logs are written
            return code
        line = _read_line(fd)
        if not line.strip():  # nothing more to run, or the server is gone
            return 0
        index = int(line)


def run_first_sent(fd: int) -> int:  # pragma: no cover - in a runner
    """A runner's start: forked before it is needed, it waits for its first task, then lives as any runner.

    The server keeps one such process ready, so a submission does not wait
    for a fork (~1.3 ms here, most of a trivial task's own cost).  The first
    task comes as one JSON line (its submission's spec and environment, the
    folder key, the offset, the index, the CPUs to pin to); an empty line or
    the server's end means there is none: exit.
    """
    fresh = FreshState()  # while it waits: a third of a millisecond no task waits for
    line = _read_line(fd)
    if not line.strip():
        return 0
    first = json.loads(line)
    if first["cpus"]:  # cpus_per_task: these CPUs, not every one of the machine
        os.sched_setaffinity(0, first["cpus"])
        fresh.cpus = os.sched_getaffinity(0)
    return run_tasks(first["spec"], first["env"], first["key"], first["offset"], first["index"], fd, fresh)


def _read_line(fd: int) -> bytes:  # pragma: no cover - in a runner
    """One line from the server (the server sends one, then waits for our answer); b"" if it is gone."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            return b""
        line += chunk
    return line


def blocked_fraction_help(reported_s: float, blocked_s: float) -> bool:
    """Whether tasks that spent this long blocked (sleeping, waiting on I/O) would gain from more runners."""
    return reported_s > 0 and blocked_s > 0.5 * reported_s


def _busy_ns() -> int:
    """Nanoseconds this process spent on a CPU or runnable, waiting for one.

    Waiting for a CPU counts as busy: on a loaded machine more processes do
    not make a CPU-bound array faster.  Without ``/proc/self/schedstat``, the
    CPU time alone.
    """
    try:
        with open("/proc/self/schedstat", "rb") as f:
            on_cpu, waiting, _ = f.read().split()
        return int(on_cpu) + int(waiting)
    except (OSError, ValueError):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return int((usage.ru_utime + usage.ru_stime) * 1e9)


def _open_descriptors() -> int:  # pragma: no cover - in the runner
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # no /proc: not checked
        return 0


def _may_run_another(code: int, elapsed: float, tasks: int, descriptors: int) -> bool:  # pragma: no cover
    """Whether this process is as clean as a fresh fork for the next task, as far as it matters.

    Only tasks that returned or raised (not a requeue, a failed dependency, a
    full disk), ran shorter than ``REUSE_MAX_S``, and left no other thread
    (it would run on into the next task), no child process (it would count
    in the next task's memory and be killed with it) and no more than a few
    open files (leaks would add up to the limit).
    """
    if code not in (0, 1) or elapsed >= REUSE_MAX_S or tasks >= REUSE_MAX_TASKS:
        return False
    if _open_descriptors() > descriptors + 8:
        return False
    try:
        if len(os.listdir("/proc/self/task")) != 1:
            return False
    except OSError:  # no /proc: ask the threading module, if the task loaded it
        threading = sys.modules.get("threading")
        if threading is not None and threading.active_count() != 1:
            return False
    while True:  # reap what the task left as zombies; a live child means no reuse
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            return False


_ITIMERS = (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF)
_LIMITS = tuple(getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_"))


class FreshState:  # pragma: no cover - in the runner
    """What a fresh fork of the server has of the process state a task may change, taken when the
    runner starts; ``restore()`` puts it back after each task (issue 26: a blocked SIGUSR2 left by
    one task lost the next one's checkpoint signal).

    Cheap enough for every task (~40 us, a third of it the peak-memory reset): the signal
    mask and dispositions come from one read of ``/proc/self/status``; handlers are looked at only where
    a disposition is not the default.
    """

    def __init__(self) -> None:
        self.umask = os.umask(0o077)
        os.umask(self.umask)
        self.limits = {limit: resource.getrlimit(limit) for limit in _LIMITS}
        self.mask = signal.pthread_sigmask(signal.SIG_BLOCK, ())
        self.handlers = {sig: signal.getsignal(sig) for sig in _SIGNALS}
        try:  # kept open: a pread of it costs half an open and read
            self.status: int | None = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.status = None
        self.signal_bits = self._signal_bits()
        self.nice = os.getpriority(os.PRIO_PROCESS, 0)
        self.cpus = os.sched_getaffinity(0)
        self.who = _identity()
        self.environ = _CEnviron.open()

    def restore(self) -> bool:
        """Undo what the last task changed; False when something cannot be undone (the runner retires)."""
        os.umask(self.umask)
        sys.stdout, sys.stderr, sys.stdin = sys.__stdout__, sys.__stderr__, sys.__stdin__
        if _identity() != self.who:  # a new session, group or user: signals and kills would miss it
            return False
        for limit, wanted in self.limits.items():
            if resource.getrlimit(limit) != wanted:
                try:
                    resource.setrlimit(limit, wanted)
                except (ValueError, OSError):  # a hard limit lowered: only a privileged process raises it
                    return False
        self._restore_signals()
        for timer in _ITIMERS:
            if signal.getitimer(timer) != (0.0, 0.0):
                signal.setitimer(timer, 0)
        try:
            if os.getpriority(os.PRIO_PROCESS, 0) != self.nice:
                os.setpriority(os.PRIO_PROCESS, 0, self.nice)  # lower again: needs privilege
            if os.sched_getaffinity(0) != self.cpus:
                os.sched_setaffinity(0, self.cpus)
        except OSError:
            return False
        if self.environ is not None:
            self.environ.match()
        # the next task's usage record reports its own peak memory (Linux: "5" resets the peak RSS)
        with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True

    def _signal_bits(self) -> tuple[int, ...] | None:
        """(blocked, ignored, caught) signal bit masks of this process, from /proc; None without it."""
        if self.status is None:
            return None
        try:
            status = os.pread(self.status, 8192, 0)
            at = status.index(b"SigBlk:")
            return tuple(int(line.partition(b":")[2], 16) for line in status[at:].split(b"\n", 3)[:3])
        except (OSError, ValueError):  # the task closed the descriptor (or put another file there)
            return None

    def _restore_signals(self) -> None:
        bits = self._signal_bits()
        if bits is not None and bits == self.signal_bits and not bits[2]:
            return  # same mask, nothing ignored or caught anew, nothing caught at all: nothing to do
        signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)
        if bits is None or self.signal_bits is None:
            changed = _SIGNALS
        else:  # only the signals whose disposition is not the default now, or was not before
            others = bits[1] | bits[2] | self.signal_bits[1] | self.signal_bits[2]
            changed = tuple(sig for sig in _SIGNALS if others >> (sig - 1) & 1)
        for sig in changed:
            wanted = self.handlers.get(sig)
            if wanted is not None and signal.getsignal(sig) is not wanted:
                signal.signal(sig, wanted)


_SIGNALS = tuple(sorted(set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}))


def _identity() -> tuple[object, ...]:  # pragma: no cover - in the runner
    return os.getpgid(0), os.getsid(0), os.getresuid(), os.getresgid()


class _CEnviron:  # pragma: no cover - in the runner
    """The C library's ``environ``, which ``os.putenv`` changes behind ``os.environ``'s back.

    Subprocesses inherit it, not ``os.environ``: a variable one task put there
    would reach the next task's subprocesses.  Both list their variables in
    the same order unless something went behind ``os.environ``'s back, so one
    list comparison (~8 us) tells; only then is each variable looked at.
    """

    def __init__(self, array: Any) -> None:
        self.array = array

    @classmethod
    def open(cls) -> _CEnviron | None:
        try:
            import ctypes

            return cls(ctypes.POINTER(ctypes.c_char_p).in_dll(ctypes.CDLL(None), "environ"))
        except (ImportError, OSError, ValueError):  # no ctypes, or no such symbol: not checked
            return None

    def match(self) -> None:
        """Make the C environment hold exactly what ``os.environ`` holds, if a task changed it behind its back."""
        # os.environ's bytes mirror on POSIX (os.environb would decode each item: ~25 us more)
        wanted: dict[bytes, bytes] = getattr(os.environ, "_data", None) or dict(os.environb)
        count = len(wanted)
        if self.array[count] is None and self.array[:count] == [k + b"=" + v for k, v in wanted.items()]:
            return
        current, at = {}, 0
        while (entry := self.array[at]) is not None:
            name, _, value = entry.partition(b"=")
            current[name], at = value, at + 1
        for name in current.keys() - wanted.keys():
            os.unsetenv(name)
        for name, value in wanted.items():
            if current.get(name) != value:
                os.putenv(name, value)
