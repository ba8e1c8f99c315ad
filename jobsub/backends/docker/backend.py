"""The Docker backend: each task (each rank) is one container of ``docker_image``.

::

    submit ─> check the image exists (no hanging pull) ─> unpack the code package the core built
              (launch.code_package, once per digest, beside it) ─> docker/spec.json in the folder
              ─> {"adopt": folder} to the dispatcher ──> it starts task 0, replies, starts the rest
    states ─> exit/<i>.json records (one listing per submission), then ONE request to the
              dispatcher for the rest (no engine call at all)
    cancel ─> the dispatcher cancels (or, when none holds the submission, exit/<i>.json =
              CANCELLED, then the task's containers are killed)

Why a dispatcher process, and why one per user rather than per submission:
tasks must keep starting (``array_parallelism``), be timed out and be
cleaned up after the submitting process exits, so that work cannot live in
client threads.  Creating every container up front does not cover time
limits or cleanup, and a detached process per submission would cost a
Python start plus a docker SDK import (~0.2 s CPU, ~40 MB) for each of the
hundreds of ``submit`` calls a loop makes.  So, like the local backend's fork
server, one detached dispatcher (``dispatch``) per user, Python,
jobsub version and engine serves every submission over a Unix socket, keeps
its state in folder markers, and takes a submission's ``docker/lock`` so
that a restarted dispatcher (any client finding a job without one asks for
it) adopts orphaned submissions from the markers and the containers' labels.

Common parameters: ``cpus_per_task`` -> NanoCpus, ``mem_gb`` -> a memory
limit without swap (shared by the ``tasks_per_node`` rank containers),
``gpus_per_node`` -> a GPU device request, ``timeout_min`` enforced by the
dispatcher (SIGUSR2 ``signal_delay_s`` before, for checkpoints), ``env``,
``setup`` (shell lines, run by ``/bin/sh`` in the container),
``array_parallelism`` (default: this machine's CPU count).

The engine is reached through the docker SDK only (imported on first use,
never by ``import jobsub``); every SDK call runs inside ``map_docker_errors``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ... import trust
from ...cloud.attached import AttachedRun, run_tasks
from ...cloud.container import ContainerParameters, container_command, passed_credentials
from ...errors import InvalidParameterError, SubmissionError
from ...folder import JobFolder
from ...packaging import ensure_unpacked
from ...parameters import Resolved
from ...runtime import daemon_socket
from .._supervised import SupervisedBackend
from ..base import Capabilities, Launch
from .engine import connect, dispatcher_request, map_docker_errors, task_env_and_labels, unless_gone

__all__ = ["DockerBackend", "DockerParameters", "map_docker_errors"]


@dataclass(kw_only=True)
class DockerParameters(ContainerParameters):
    """Keys of the Docker backend (``docker_<key>`` with AutoExecutor); the container keys
    (``image``, ``python``, ``package_code``, ``code_*``, ``debug``) are ``ContainerParameters``'."""

    pull: bool = False
    """Pull ``image`` when it is not on the engine (else a missing image fails the submit at once)."""
    network_mode: str = "bridge"
    """Docker's network mode of the task containers (``"host"``: they reach the host's loopback services)."""
    network: str | None = None
    """A user-defined network to join (overrides ``network_mode``)."""
    volumes: list[str] = field(default_factory=list)
    """Extra bind mounts, ``"HOST:CONTAINER[:ro]"``; the job folder is always mounted at its own path."""
    user: str | None = None
    """``uid:gid`` of the tasks; default the submitting user's, so folder files stay theirs."""
    interactive: bool = False
    """The same as ``debug``: run each task attached to this terminal (``breakpoint()`` works)."""

    def __post_init__(self) -> None:
        self.debug = self.debug or self.interactive


class DockerBackend(SupervisedBackend):
    """Runs each task in a container on a Docker engine (local or reachable by DOCKER_HOST)."""

    name = kind = "docker"
    Parameters = DockerParameters
    capabilities = Capabilities(object_store_folders=True)
    # results are seen through their files; the engine is asked only to catch failures, and each
    # listing costs the engine CPU that starting containers needs
    poll_interval_s = 0.5
    result_check_s = 0.02  # results land on a local disk: a stat costs microseconds
    result_grace_s = 0.0  # exit/<i>.json is written after the container ended: its result is there
    # the dispatcher sets the canonical JOBSUB_* variables itself: the worker's defaults
    task_env: ClassVar[Mapping[str, str]] = {}
    result_parameters = ("image", "python")

    def __init__(self, root: str, base_url: str | None = None) -> None:
        super().__init__(root)
        self.base_url = base_url or os.environ.get("DOCKER_HOST") or None
        self._api_client: Any = None
        self._lock = threading.Lock()
        self._sock_path = daemon_socket("docker", self.base_url or "")

    def config(self) -> dict[str, Any]:
        return {"root": self.root, **({"base_url": self.base_url} if self.base_url else {})}

    @property
    def api(self) -> Any:
        """The docker SDK's low-level client (one per backend instance, created on first use)."""
        with self._lock:
            if self._api_client is None:
                self._api_client = connect(self.base_url)
            return self._api_client

    def check(self) -> None:
        with map_docker_errors("checking the engine", self.base_url):
            self.api.ping()

    # -- submit ---------------------------------------------------------------------------
    def submit(self, launch: Launch, n_tasks: int, params: Resolved, folder: JobFolder, *, array: bool) -> str:
        common, spec = params.common, params.specific
        if common.nodes > 1:
            raise InvalidParameterError("the docker backend runs each task on one engine: use nodes=1")
        if not spec.image:
            raise InvalidParameterError("set the image of the task containers: docker_image='name:tag'")
        image_id = self._resolve_image(spec.image, spec.pull)
        run_spec = self._run_spec(launch, n_tasks, params, folder, array, image_id)
        passed = self._passed(common.pass_env, folder)
        if spec.debug:
            self._run_attached(run_spec, folder, passed)
            return folder.key
        folder.write_backend_json("docker", "spec.json", run_spec)
        try:
            self._hand_over(folder, passed, first=True)
        except SubmissionError as exc:
            if common.gpus_per_node and "device driver" in str(exc):
                raise SubmissionError(
                    f"{exc}. gpus_per_node={common.gpus_per_node} needs GPUs on the engine's machine and "
                    "the NVIDIA Container Toolkit in the engine (nvidia-ctk runtime configure --runtime=docker)"
                ) from exc
            raise
        return folder.key

    def _resolve_image(self, image: str, pull: bool) -> str:
        """The image's id (every task of the array runs the same image, even if the tag moves)."""
        api = self.api
        from docker.errors import NotFound

        with map_docker_errors(f"looking up image {image!r}", self.base_url):
            with contextlib.suppress(NotFound):
                return str(api.inspect_image(image)["Id"])
            if not pull:
                raise SubmissionError(
                    f"the Docker image {image!r} is not on the engine at {self.base_url or 'the default socket'}; "
                    "build or load it first (jobsub.images.build_image, docker load), or set docker_pull=True "
                    "to pull it from its registry"
                )
            from docker.errors import APIError
            from docker.utils import parse_repository_tag

            repository, tag = parse_repository_tag(image)
            try:
                api.pull(repository, tag=tag or "latest")
            except APIError as exc:  # no registry, no such image, no access: the submission's input is wrong
                raise SubmissionError(
                    f"the Docker image {image!r} is not on the engine and pulling it failed: "
                    f"{exc.explanation or exc}"
                ) from exc
            return str(api.inspect_image(image)["Id"])

    def _run_spec(
        self, launch: Launch, n_tasks: int, params: Resolved, folder: JobFolder, array: bool, image_id: str
    ) -> dict[str, Any]:
        """Everything the dispatcher needs to create the containers, JSON-safe."""
        common, spec = params.common, params.specific
        path = folder.local_file()  # None: a bucket, which the task reads through its SDK
        if spec.debug:  # output to the terminal, not the folder: pdb needs it
            launch = launch.replace(logs="none")
        # "Mounts" rather than "host:container" binds: paths may hold ':' or spaces
        mounts = [_bind(path)] if path is not None else []
        upstream = {url for refs in folder.waits_for().values() for url, _, _ in refs}
        for url in sorted(upstream):  # the task reads the results of the jobs it takes as arguments
            if "://" not in url and url != path:
                mounts.append(_bind(url, read_only=True))
        code_dir = None
        if launch.code_package is not None:  # a tarball on this machine (jobsub.cloud.container)
            code_dir = str(ensure_unpacked(launch.code_package))
            mounts.append(_bind(code_dir))  # writable: tasks share the .pyc they compile
            shipped = ""  # the engine is on this machine: the unpacked copy is all the task needs
            if path is not None:  # kept with the job (a later adoption re-creates its containers)
                folder.add_backend_file("docker", "code.tar.gz", launch.code_package)
                shipped = folder.backend_file("docker", "code.tar.gz") or ""
            launch = launch.replace(code_package=shipped)
        argv = container_command(launch, spec.python, unpack_dir=code_dir, setup=common.setup)
        ranks = common.tasks_per_node
        host_config: dict[str, Any] = {
            "mounts": mounts, "binds": spec.volumes, "network_mode": spec.network or spec.network_mode, "init": True,
        }
        if common.cpus_per_task:
            host_config["nano_cpus"] = int(common.cpus_per_task * 1e9)
        if common.mem_gb:  # per node, shared by its ranks; no swap, so the limit is the limit
            host_config["mem_limit"] = host_config["memswap_limit"] = int(common.mem_gb * 2**30 / ranks)
        if common.gpus_per_node:
            host_config["device_requests"] = [{"count": common.gpus_per_node, "capabilities": [["gpu"]]}]
        create: dict[str, Any] = {"user": spec.user or f"{os.getuid()}:{os.getgid()}"}
        if code_dir:
            create["working_dir"] = code_dir
        return {
            "n": n_tasks, "ranks": ranks, "array": array, "offset": launch.offset, "image": image_id, "command": argv,
            "name": f"jobsub-{folder.key}",
            "parallelism": common.array_parallelism or os.cpu_count() or 1,
            "timeout_s": None if common.timeout_min is None else common.timeout_min * 60,
            "signal_delay_s": common.signal_delay_s,
            # the secrets travel over the dispatcher's socket (``_passed``), never in spec.json
            "environment": {"PYTHONUNBUFFERED": "1", **trust.without_secrets(dict(launch.env))},
            "labels": {
                "jobsub.backend": "docker", "jobsub.root": self.storage.url, "jobsub.folder": folder.url,
                "jobsub.key": folder.key, "jobsub.name": common.name, "jobsub.image": spec.image,
            },
            "host_config": host_config, "create": create,
        }

    # -- states, cancel, logs -------------------------------------------------------------------
    def _adopt(self, folder: JobFolder) -> None:
        """A submission no dispatcher holds (ours rebuilds it from the records and the labels)."""
        names = folder.parameter("pass_env", common=True) or []
        self._hand_over(folder, self._passed(names, folder))

    @staticmethod
    def _passed(names: Sequence[str], folder: JobFolder) -> dict[str, str]:
        """What tasks take from this process's environment, by name: ``pass_env``, and the store's
        credentials when the folder is a bucket; and the submission's secrets (``jobsub.trust``).
        Sent over the dispatcher's socket, never written."""
        wanted = [*names, *passed_credentials(folder)]
        passed = {name: os.environ[name] for name in wanted if name in os.environ}
        return {**passed, **trust.secrets_env(folder.key, folder.read_meta() if folder.exists() else {})}

    def _kill_recorded(self, run: dict[str, Any]) -> None:
        for cid in run.get("handles", {}).values():
            with map_docker_errors(f"cancelling container {cid[:12]}", self.base_url), unless_gone():
                self.api.remove_container(cid, force=True)

    def logs(self, backend_id: str, folder: JobFolder, index: int, rank: int) -> tuple[str | None, str | None]:
        """The worker's own log files, plus what the container printed outside them (early errors)."""
        out, err = super().logs(backend_id, folder, index, rank)
        extra = folder.read_log(index, rank, "container")
        if extra is None and folder.read_exit(index) is None:
            run = folder.read_run(index) or {}
            cid = run.get("handles", {}).get(str(rank))
            if cid:
                with map_docker_errors("reading container logs", self.base_url), unless_gone():
                    extra = self.api.logs(cid, stdout=True, stderr=True).decode(errors="replace")
        if extra:
            err = (err or "") + extra
        return out, err

    def _task(self, backend_id: str) -> tuple[JobFolder, int]:
        key, sep, index = backend_id.partition("_")
        return JobFolder(self.storage, key), int(index) if sep else 0

    # -- the dispatcher ---------------------------------------------------------------------
    def _request(self, req: dict[str, Any]) -> dict[str, Any]:
        return dispatcher_request(self._sock_path, self.base_url, req)

    # -- debug: attached ------------------------------------------------------------------------
    def _run_attached(self, run_spec: dict[str, Any], folder: JobFolder, passed: dict[str, str]) -> None:
        """Run the tasks one after the other, attached, before ``submit`` returns (``jobsub.cloud.attached``).

        ``passed``: what a dispatched run's containers get over the socket (``_passed``: ``pass_env``,
        a bucket's credentials, the secrets), given to each container as the dispatcher does.
        """
        if run_spec["ranks"] > 1:
            raise InvalidParameterError("docker_debug runs one rank at a time: use tasks_per_node=1")
        run = AttachedRun(
            run_spec["image"], run_spec["command"], run_spec["host_config"], run_spec["create"],
            timeout_s=run_spec["timeout_s"], base_url=self.base_url,
        )
        offset = run_spec["offset"]

        def env_and_labels(index: int) -> tuple[dict[str, str], dict[str, str]]:
            env, labels = task_env_and_labels(run_spec, folder.key, index - offset, 0, 1)
            return {**env, **passed}, labels  # not in run_spec: it is kept in the folder

        run_tasks(run, folder, range(offset, offset + run_spec["n"]), env_and_labels)


def _bind(path: str, read_only: bool = False) -> dict[str, Any]:
    """A bind mount of ``path`` at the same path inside (the API's ``Mount`` shape, JSON-safe)."""
    return {"Type": "bind", "Source": path, "Target": path, "ReadOnly": read_only}
