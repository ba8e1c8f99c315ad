"""Functions the test jobs run (importable, so they pickle by reference)."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from typing import Any

import jobsub
from jobsub.helpers import Checkpointable


def add(a: float, b: float) -> float:
    return a + b


def fail(message: str) -> None:
    raise ValueError(message)


def fail_on(index: int, bad: int) -> int:
    """Task ``index`` of a sweep: the one whose index is ``bad`` raises."""
    if index == bad:
        raise ValueError(f"task {index} fails")
    return index


def sleep_then(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


def describe_environment() -> dict[str, Any]:
    env = jobsub.JobEnvironment()
    return {
        "job_id": env.job_id,
        "global_rank": env.global_rank,
        "local_rank": env.local_rank,
        "num_tasks": env.num_tasks,
        "array_index": env.array_index,
        "cluster": env.cluster,
        "result_pickle": str(env.paths.result_pickle),
    }


def print_and_return(text: str) -> str:
    print(text)
    print(f"to stderr: {text}", file=sys.stderr)
    return text


def environment_name() -> tuple[str, int]:
    env = jobsub.JobEnvironment()
    return env.name, int(env.USR_SIG)


def log_and_return(text: str) -> str:
    logging.getLogger("tests.tasks").info("logged: %s", text)
    return text


def return_unpicklable() -> Any:
    import threading

    return threading.Lock()


class UnpicklableError(Exception):
    def __init__(self) -> None:
        super().__init__("cannot travel")
        import threading

        self.lock = threading.Lock()


def raise_unpicklable() -> None:
    raise UnpicklableError()


def getenv(name: str) -> str | None:
    return os.environ.get(name)


class SlowCounter(Checkpointable):
    """Sleeps longer than its time limit on the first run; finishes once requeued."""

    def __init__(self) -> None:
        self.attempts = 0

    def __call__(self, seconds: float) -> int:
        self.attempts += 1
        if self.attempts == 1:
            time.sleep(seconds)
        return self.attempts


def torch_env() -> dict[str, str]:
    from jobsub.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export()
    return {k: os.environ[k] for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")}


def total(groups: list[Any], extra: dict[str, float]) -> float:
    """Sum of nested numbers: jobs passed inside lists, tuples and dicts arrive as their values."""
    flat: list[float] = []
    for group in groups:
        flat.extend(group if isinstance(group, (list, tuple)) else [group])
    return sum(flat) + sum(extra.values())


class NeedsArguments(Exception):
    """An exception whose constructor takes two arguments but passes one message to Exception."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"code {code}: {detail}")
        self.code = code


def raise_with_required_arguments() -> None:
    raise NeedsArguments(7, "needs both")


def return_instance_of_a_module_missing_here() -> Any:
    """An object of a class from a module that exists only where the job ran."""
    import importlib
    import tempfile

    where = tempfile.mkdtemp(prefix="jobsub-test-module-")
    with open(os.path.join(where, "jobsub_vanishing_module.py"), "w") as f:
        f.write("class Thing:\n    pass\n")
    sys.path.insert(0, where)
    module = importlib.import_module("jobsub_vanishing_module")
    return module.Thing()


def close_stderr_then_fail(message: str) -> None:
    sys.stderr.close()
    os.close(2)
    raise RuntimeError(message)


def exit_with(code: int) -> None:
    sys.exit(code)


def hard_exit(code: int) -> None:
    """Leave at once with ``code``, as a crashing extension or ``os._exit`` would (noting that it ran)."""
    folder = jobsub.JobEnvironment().paths.folder
    with open(os.path.join(folder, "runs.txt"), "a") as f:
        f.write("ran\n")
    os._exit(code)


def hog(megabytes: int) -> int:
    """Hold ``megabytes`` of touched memory for a while (every page written, so really resident)."""
    block = bytearray(megabytes * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(min(10.0, megabytes / 40))  # long enough for a sampling limit (local: 0.25 s) to see it
    return len(block)


def leave_a_thread_running(_: object = None) -> str:
    """Return while a non-daemon thread still runs (it would keep a plain interpreter alive)."""
    import threading

    threading.Thread(target=time.sleep, args=(300,), name="left-behind").start()
    return "returned"


def fill_and_return(value: int) -> int:
    """Fill the disk that holds this job's folder, then return (the result cannot be written)."""
    folder = jobsub.JobEnvironment().paths.folder
    with open(os.path.join(folder, "filler"), "wb") as f, contextlib.suppress(OSError):
        for _ in range(1024):  # up to 64 MiB: more than the disk holds
            f.write(b"x" * 65536)
            f.flush()
    return value


def leave_a_daemon_behind() -> int:
    """Start a process that outlives the task, in a session of its own (the task's group kill misses it)."""
    pid = os.fork()
    if pid == 0:
        os.setsid()
        time.sleep(30)
        os._exit(0)
    return pid


def start_a_child() -> int:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]).pid


def cpus() -> int:
    return len(os.sched_getaffinity(0))


def print_then_sleep(text: str, seconds: float) -> str:
    print(text, flush=True)
    time.sleep(seconds)
    return "done"


def append_line(path: str, text: str) -> int:
    """Append ``text`` to ``path`` and return how many lines it has: how often a job really ran."""
    with open(path, "a") as f:
        f.write(text + "\n")
    with open(path) as f:
        return len(f.read().splitlines())

def report(index: int) -> dict[str, Any]:
    """What a task of a reused process must see as its own: pid, array index, environment."""
    print(f"stdout of task {index}")
    print(f"stderr of task {index}", file=sys.stderr)
    os.environ[f"LEFT_BY_{index}"] = "1"  # must not reach the next task
    return {
        "pid": os.getpid(),
        "index": jobsub.JobEnvironment().array_index,
        "leftovers": sorted(k for k in os.environ if k.startswith("LEFT_BY_")),
    }


def die_at(index: int, bad: int) -> int:
    """Task ``bad`` kills its own process, as a segfault or the OOM killer would."""
    if index == bad:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


def leave_thread() -> int:
    """Leaves a thread running: its process must not run another task."""
    import threading

    threading.Thread(target=time.sleep, args=(5,), daemon=True).start()
    return os.getpid()


def hold_memory(mb: int) -> int:
    """Touch ``mb`` MiB, release them, return the pid."""
    block = bytearray(mb * 2**20)
    block[::4096] = b"x" * len(block[::4096])
    del block
    return os.getpid()


def fail_if(fail: bool, value: int) -> int:
    """``value``, or ValueError when ``fail``."""
    if fail:
        raise ValueError(f"failed on purpose ({value})")
    return value


def process_state(hostile: str = "") -> dict[str, Any]:
    """What a task sees of its process, after changing the part named by ``hostile`` (and leaving it so)."""
    import resource
    import signal

    if hostile == "rlimit":
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 64), hard))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a hard limit lowered: only root raises it again
    elif hostile == "sigmask":
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2, signal.SIGTERM])
    elif hostile == "handler":
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, lambda *_: None)
    elif hostile == "putenv":
        os.putenv("LEFT_BY_PUTENV", "1")
        os.unsetenv("PATH")
    elif hostile == "nice":
        os.nice(5)
    elif hostile == "itimer":
        for timer in (signal.ITIMER_VIRTUAL, signal.ITIMER_PROF):
            signal.setitimer(timer, 600)
    elif hostile == "affinity":
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    elif hostile:
        raise ValueError(f"no such change: {hostile}")
    seen = subprocess.run(["/usr/bin/env"], capture_output=True, text=True, check=True).stdout.splitlines()
    return {
        "limits": [resource.getrlimit(getattr(resource, n)) for n in ("RLIMIT_NOFILE", "RLIMIT_CORE")],
        "blocked": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        "handlers": [str(signal.getsignal(s)) for s in (signal.SIGHUP, signal.SIGUSR1)],
        "subprocess_env": sorted(v for v in seen if v.startswith(("LEFT_BY_PUTENV=", "PATH="))),
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "timers": [signal.getitimer(t) for t in (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF)],
        "cpus": sorted(os.sched_getaffinity(0)),
        "pid": os.getpid(),
    }


def cancel_self_then_return(value: Any) -> Any:
    """Record this task's own cancel in its folder while it runs (as another process's
    ``job.cancel()`` would, on a scheduler that cannot stop a running task), then return."""
    from jobsub.folder import JobFolder

    folder = JobFolder.from_url(os.environ["JOBSUB_FOLDER"])
    folder.write_exit(int(os.environ["JOBSUB_ARRAY_TASK_ID"]), "CANCELLED", "cancelled while it ran")
    return value
