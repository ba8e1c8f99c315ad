"""Functions the test jobs run (importable, so they pickle by reference)."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import jobsub
from jobsub.helpers import Checkpointable


def add(a: float, b: float) -> float:
    return a + b


def fail(message: str) -> None:
    raise ValueError(message)


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
