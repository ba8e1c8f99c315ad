"""Docker engine helpers shared by the backend (client side) and its dispatcher.

What both sides must agree on lives here: how SDK errors become jobsub
errors, how a container's end is read, a task container's environment and
labels; the client half of the dispatcher protocol (one JSON line each way
on a Unix socket).  The attached debug run every container backend shares
(``jobsub.cloud.attached``) reads a container's end with ``end_of_containers``.

Nothing here imports the docker SDK at module level: ``import jobsub``
stays free of it, and so does a task that only reads markers.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from ...cloud.gateway import error_boundary
from ...errors import BackendError, SubmissionError
from .._daemon import request, spawn_detached
from .._supervisor import TaskEnd

__all__ = [
    "connect",
    "dispatcher_request",
    "docker_error",
    "end_of_containers",
    "map_docker_errors",
    "not_found",
    "start_dispatcher",
    "task_env_and_labels",
    "unless_gone",
]


def map_docker_errors(action: str, base_url: str | None = None) -> contextlib.AbstractContextManager[None]:
    """Docker SDK/transport errors raised inside become jobsub errors (``from`` the original)."""
    return error_boundary(lambda exc: docker_error(exc, action, base_url))


def docker_error(exc: Exception, action: str, base_url: str | None = None) -> Exception | None:
    """The jobsub error for a docker SDK/transport error, None for anything else.

    Client errors of the engine (4xx: no such image, bad mount, name
    conflict) become ``SubmissionError``; an engine that cannot be reached or
    fails (5xx) becomes ``BackendError``.
    """
    errors = sys.modules.get("docker.errors")
    requests_exc = sys.modules.get("requests.exceptions")
    where = base_url or os.environ.get("DOCKER_HOST") or "the default socket"
    if errors is not None and isinstance(exc, errors.APIError):
        text = exc.explanation or str(exc)
        if exc.is_client_error():
            return SubmissionError(f"{action}: the Docker engine refused: {text}")
        return BackendError(f"{action}: the Docker engine failed: {text}")
    transport = (errors.DockerException,) if errors is not None else ()
    if requests_exc is not None:
        transport += (requests_exc.RequestException,)
    if isinstance(exc, (*transport, OSError)):
        return BackendError(
            f"{action}: cannot reach the Docker engine at {where}: {exc}. "
            "Is the engine running (`docker info` tells)? Is DOCKER_HOST right?"
        )
    return None


def connect(base_url: str | None) -> Any:
    """The docker SDK's low-level client for ``base_url`` (None: DOCKER_HOST or the default socket).

    ``from_env`` with DOCKER_HOST overridden keeps the TLS settings of the
    environment (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH) for a remote engine.
    """
    try:
        import docker
    except ImportError as exc:
        raise BackendError("the docker backend needs the docker SDK: pip install 'jobsub[docker]'") from exc
    environment = dict(os.environ)
    if base_url:
        environment["DOCKER_HOST"] = base_url
    host = environment.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if host.startswith("unix://") and not os.path.exists(host[len("unix://") :]):
        # say so plainly; docker-py would also leak the socket of its failed connect
        # (UnixHTTPConnection.connect does not close it), a ResourceWarning at exit
        raise BackendError(
            f"cannot reach the Docker engine at {host}: no such socket. "
            "Is the engine running (`docker info` tells)? Is DOCKER_HOST right?"
        )
    with map_docker_errors("connecting", base_url):
        return docker.from_env(environment=environment).api


def not_found() -> tuple[type[BaseException], ...]:
    """docker's "no such object" error, for ``except``/``suppress`` (empty without the SDK)."""
    try:
        from docker.errors import NotFound
    except ImportError:
        return ()
    return (NotFound,)


class _Gone:
    def __init__(self) -> None:
        self.gone = False

    def __bool__(self) -> bool:
        return self.gone


@contextlib.contextmanager
def unless_gone() -> Iterator[_Gone]:
    """Swallow "no such container" (404) and "removal in progress" (409); say it happened."""
    flag = _Gone()
    try:
        yield flag
    except Exception as exc:
        if getattr(exc, "status_code", None) not in (404, 409):
            raise
        flag.gone = True


def end_of_containers(states: list[dict[str, Any] | None], mem_limit: int | None) -> TaskEnd:
    """How a task's containers ended, from their ``State`` (None: the container vanished).

    Shared by the dispatcher and the attached run, so both read a
    container's end the same way; the supervisor's ``end_state`` turns it
    into a state.  A container runs under ``init``: a rank killed by a
    signal exits with 128 + its number.
    """
    codes: list[int | None] = [s.get("ExitCode") if s else None for s in states]
    signals: list[int | None] = [c - 128 if c is not None and 128 < c < 128 + 65 else None for c in codes]
    error = str(next((s.get("Error") for s in states if s and s.get("Error")), ""))
    oom = ""
    if any(s.get("OOMKilled") for s in states if s):
        limit = f" of {mem_limit / 2**20:.0f} MiB (mem_gb)" if mem_limit else ""
        oom = f"the kernel killed the container for exceeding its memory limit{limit}"
    vanished = (
        "its container disappeared before jobsub saw it end (removed outside jobsub?)"
        if any(s is None for s in states) else ""
    )
    return TaskEnd(codes, signals, oom=oom, error=error, vanished=vanished)


def task_env_and_labels(
    spec: dict[str, Any], key: str, index: int, rank: int, attempt: int
) -> tuple[dict[str, str], dict[str, str]]:
    """The environment (canonical JOBSUB_* variables) and labels of one task container."""
    job_id = f"{key}_{index}" if spec["array"] else key
    env = dict(spec["environment"])
    env.update(
        JOBSUB_ARRAY_TASK_ID=str(index), JOBSUB_GLOBAL_RANK=str(rank), JOBSUB_LOCAL_RANK=str(rank),
        JOBSUB_NUM_TASKS=str(spec["ranks"]), JOBSUB_NUM_NODES="1", JOBSUB_NODE="0",
        JOBSUB_RAW_JOB_ID=job_id, JOBSUB_ARRAY_JOB_ID=key if spec["array"] else "",
    )
    labels = dict(spec["labels"])
    labels.update(
        {"jobsub.job_id": job_id, "jobsub.task": str(index), "jobsub.rank": str(rank), "jobsub.attempt": str(attempt)}
    )
    return env, labels


def dispatcher_request(sock_path: str, base_url: str | None, req: dict[str, Any]) -> dict[str, Any]:
    """Send one request to the dispatcher serving ``sock_path``, starting it if none answers."""
    answer = request(sock_path, req, lambda: start_dispatcher(sock_path, base_url), what="docker dispatcher")
    if not answer.get("ok"):
        if req.get("first"):  # the engine refused the first container: a bad parameter, most likely
            raise SubmissionError(f"the Docker engine refused the task container: {answer.get('error')}")
        raise BackendError(f"the docker dispatcher failed: {answer.get('error')}; see {sock_path}.log")
    return answer


def start_dispatcher(sock_path: str, base_url: str | None) -> None:
    """Start the dispatcher detached: it must outlive this process."""
    spawn_detached("jobsub.backends.docker.dispatch", [sock_path, base_url or ""], sock_path + ".log")
