"""The attached debug run: a container backend's tasks run here, in the foreground.

``debug=True`` on any container backend (``ContainerParameters.debug``;
Docker's ``interactive`` is the same) runs each task of a submission on this
machine's Docker engine, attached and one after the other, before ``submit``
returns::

    backend.submit ─> run_submission_here(launch, command, image, n, common, folder, env_of, read_only_files=...)
        ─> run_tasks(AttachedRun(image, command, host_config), folder, indexes, env_of)
        for each task: create the container ─> attach (a TTY when this is a terminal: breakpoint()
            works) ─> stop it at timeout_min (SIGTERM, SIGKILL KILL_GRACE_S later) ─> remove it
        ─> log/<i>.0.out|err and exit/<i>.json in the folder (the supervisor's end_state rule)
    ids: a scheduler backend returns attached_id(launch) ("here-<tag>"); the core indexes it
        (.ids) like any id, so attached_states finds the folder through the index

The same image, the same command (``container_command``) and the same folder
as the real run: what fails here fails there.  Nothing reaches a scheduler.
The docker SDK is imported only when a task runs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, NamedTuple

from ..folder import JobFolder, Submission, lookup_id
from ..states import JobState, Status
from ..storage import Storage

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..backends.base import Launch
    from ..parameters import CommonParameters

__all__ = [
    "ID_PREFIX",
    "AttachedRun",
    "attached_id",
    "attached_states",
    "is_attached",
    "run_attached",
    "run_submission_here",
    "run_tasks",
]

logger = logging.getLogger("jobsub.attached")

ID_PREFIX = "here-"
"""The ids of submissions a scheduler backend ran attached (``here-<submission tag>``)."""


@dataclass
class AttachedRun:
    """One container per task, as the real backend would start it.

    Attributes:
        image: the image (name or id) on this machine's engine.
        command: the task's argv (``container_command``).
        host_config: ``create_host_config``'s arguments (mounts, network, ``mem_limit``).
        create: more ``create_container`` arguments (``user``, ``working_dir``).
        timeout_s: the task's time limit (``timeout_min``); None: none.
        base_url: the engine (None: DOCKER_HOST or the default socket).
    """

    image: str
    command: list[str]
    host_config: dict[str, Any]
    create: dict[str, Any] = field(default_factory=dict)
    timeout_s: float | None = None
    base_url: str | None = None


def attached_id(launch: Launch) -> str:
    """The id of a submission run attached: found again through the folder's id index."""
    return f"{ID_PREFIX}{launch.tag}"


def is_attached(backend_id: str) -> bool:
    return backend_id.startswith(ID_PREFIX)


def run_tasks(
    run: AttachedRun,
    folder: JobFolder,
    indexes: Iterable[int],
    env_of: Callable[[int], tuple[dict[str, str], dict[str, str]]],
) -> None:
    """Run task ``i`` of ``indexes`` (folder indexes) attached, one after the other, recording each end.

    ``env_of(i)``: the environment and labels of task ``i``'s container (the
    variables the real backend sets: its index, its job id).
    """
    from ..backends._supervisor import end_state
    from ..backends.docker.engine import connect, end_of_containers

    api = connect(run.base_url)
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    try:
        for index in indexes:
            env, labels = env_of(index)
            logger.info("task %d of %s runs attached, in a container of %s", index, folder.url, run.image)
            end = run_attached(
                api, run.image, run.command, host_config=run.host_config, environment=env, labels=labels, tty=tty,
                timeout_s=run.timeout_s, base_url=run.base_url, **run.create,
            )
            folder.write_task_log(index, 0, "out", end.stdout)
            folder.write_task_log(index, 0, "err", end.stderr)
            ended = end_of_containers([end.state], run.host_config.get("mem_limit"))
            state, reason = end_state(ended, timed_out=end.timed_out, limit_s=run.timeout_s)
            folder.write_exit(index, state, reason, ended.codes)
    finally:
        api.close()


def run_submission_here(
    launch: Launch, argv: list[str], image: str, n_tasks: int, common: CommonParameters, folder: JobFolder,
    env_of: Callable[[int, str], dict[str, str]],
    *,
    read_only_files: Mapping[str, str] | None = None,
    shared: Sequence[str] = (),
) -> str:
    """``debug=True`` on a scheduler backend: the ``n_tasks`` tasks of ``launch`` in containers of
    ``image``, attached, within ``timeout_min`` and ``mem_gb``, on the host's network (the bucket's
    endpoint as this machine sees it); returns their id (``attached_id``).

    ``env_of(i, job_id)``: the environment of the submission's task ``i`` (folder task
    ``launch.offset + i``) with the variables its scheduler would set (its index, its job id;
    ``job_id``: the submission's).  ``read_only_files``: host path -> path in the container,
    bind-mounted read-only (a credentials file the SDK in the task finds by a variable: its
    content never enters an environment or the folder).  ``shared``: directories of this
    machine the containers see at the same path, read-write (a folder the scheduler's tasks
    reach through a volume: Kubernetes' claim).
    """
    host_config: dict[str, Any] = {"network_mode": "host"}
    binds = {path: {"bind": path, "mode": "rw"} for path in shared}
    binds.update({host: {"bind": inside, "mode": "ro"} for host, inside in (read_only_files or {}).items()})
    if binds:
        host_config["binds"] = binds
    if common.mem_gb:
        host_config["mem_limit"] = int(common.mem_gb * 2**30)
    timeout_s = None if common.timeout_min is None else common.timeout_min * 60
    run = AttachedRun(image, argv, host_config, timeout_s=timeout_s)
    job_id = attached_id(launch)
    run_tasks(run, folder, range(launch.offset, launch.offset + n_tasks), lambda i: (env_of(i - launch.offset, job_id), {}))
    return job_id


def attached_states(storage: Storage, backend_ids: Sequence[str]) -> dict[str, Status]:
    """The states of tasks run attached: their exit records, every one written before ``submit`` returned."""
    answer: dict[str, Status] = {}
    folders: dict[str, tuple[JobFolder, Submission | None] | None] = {}
    for backend_id in backend_ids:
        parent, _, child = backend_id.partition("_")
        if parent not in folders:
            key = lookup_id(storage, parent)
            folder = JobFolder(storage, key) if key else None
            folders[parent] = (folder, folder.submission(parent)) if folder is not None else None
        found = folders[parent]
        record = None
        if found is not None and found[1] is not None and (child or "0").isdigit():
            record = found[0].read_exit(found[1].offset + int(child or 0))
        if record is None or "damaged" in record:
            answer[backend_id] = Status(JobState.LOST, f"no record of the attached run {backend_id} in its folder")
        else:
            answer[backend_id] = Status(JobState(record["state"]), str(record.get("reason", "")))
    return answer


class AttachedEnd(NamedTuple):
    """How one attached container ended."""

    state: dict[str, Any]
    """The container's final ``State`` (``ExitCode``, ``OOMKilled``, ``Error``)."""
    stdout: bytes
    stderr: bytes
    timed_out: bool
    """Stopped by jobsub at its time limit."""


def run_attached(
    api: Any,
    image: str,
    command: list[str],
    *,
    host_config: dict[str, Any],
    environment: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    tty: bool = False,
    stdout: BinaryIO | None = None,
    stderr: BinaryIO | None = None,
    timeout_s: float | None = None,
    base_url: str | None = None,
    **create: Any,
) -> AttachedEnd:
    """Run one container in the foreground; the container is removed after.

    With ``tty`` the terminal is attached raw (stdin included), so
    ``breakpoint()`` in the task works; without it, output is streamed to
    ``stdout``/``stderr`` (default: this process's) as it comes.  A container
    still running after ``timeout_s`` is stopped (SIGTERM, SIGKILL a few
    seconds later).
    """
    from ..backends._supervisor import KILL_GRACE_S
    from ..backends.docker.engine import connect, map_docker_errors

    out_stream = stdout or sys.stdout.buffer
    err_stream = stderr or sys.stderr.buffer
    outs: list[bytes] = []
    errs: list[bytes] = []
    expired = threading.Event()

    def expire(cid: str) -> None:  # in a timer thread: a client of its own
        expired.set()
        try:
            stopper = connect(base_url)
            try:
                stopper.stop(cid, timeout=math.ceil(KILL_GRACE_S))  # whole seconds: the engine refuses "3.0"
            finally:
                stopper.close()
        except Exception as exc:  # said, not swallowed: the task then runs past its limit
            logger.warning("could not stop container %s at its time limit: %s", cid[:12], exc)

    with map_docker_errors("running an attached container", base_url):
        cid = api.create_container(
            image, command, environment=environment, labels=labels, tty=tty, stdin_open=tty,
            host_config=api.create_host_config(**host_config), **create,
        )["Id"]
        timer = threading.Timer(timeout_s, expire, (cid,)) if timeout_s is not None else None
        try:
            if tty:
                _pump_tty(api, cid, outs, timer)
            else:
                api.start(cid)
                if timer is not None:
                    timer.start()
                attached = api.attach(cid, stdout=True, stderr=True, stream=True, logs=True, demux=True)
                try:
                    for chunk_out, chunk_err in attached:
                        for chunk, sink, stream in ((chunk_out, outs, out_stream), (chunk_err, errs, err_stream)):
                            if chunk:
                                sink.append(chunk)
                                stream.write(chunk)
                                stream.flush()
                finally:
                    # CancellableStream.close() shuts the socket but leaves the HTTP response's file
                    # open (a ResourceWarning at exit): closing the response closes both
                    response = getattr(attached, "_response", None)
                    (response.close if response is not None else attached.close)()
            api.wait(cid)
            state: dict[str, Any] = api.inspect_container(cid)["State"]
        finally:
            if timer is not None:
                timer.cancel()
            with contextlib.suppress(Exception):
                api.remove_container(cid, force=True)
    return AttachedEnd(state, b"".join(outs), b"".join(errs), expired.is_set())


def _pump_tty(api: Any, cid: str, outs: list[bytes], timer: threading.Timer | None) -> None:  # pragma: no cover - needs a terminal
    """Attach this terminal (raw mode) to the container's TTY until it exits."""
    import select
    import termios
    import tty

    sock = api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    raw = getattr(sock, "_sock", sock)
    api.start(cid)
    if timer is not None:
        timer.start()
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        while True:
            ready, _, _ = select.select([fd, raw], [], [])
            if raw in ready:
                data = raw.recv(65536)
                if not data:
                    return
                outs.append(data)
                os.write(sys.stdout.fileno(), data)
            if fd in ready:
                raw.sendall(os.read(fd, 65536))
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
