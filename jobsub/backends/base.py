"""The contract between jobsub's core and a backend, and the lazy registry.

A backend knows how to *start* N copies of the worker (rendering a
``Launch``), how to ask the state of many of its jobs in ONE call, how to
cancel, and where its logs are.  It never pickles, waits, retries or formats
errors: ``jobsub.executor`` and ``jobsub.job`` do that, once, for all.
docs/adding-a-backend.md walks through writing one.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import BackendError, InvalidParameterError
from ..folder import JobFolder
from ..parameters import CommonParameters, NoParameters, Resolved
from ..states import Status

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..cloud.gateway import Gateway
    from ..storage import Storage

__all__ = [
    "PREFIX_ALIASES", "Backend", "Capabilities", "Launch", "check_credentials", "check_env", "check_folder", "get_backend",
    "known_backends",
    "load_backend_class", "register_backend",
]


@dataclass(frozen=True)
class Launch:
    """What a backend starts N copies of: the worker, told where its folder and its index are.

    A backend renders this into its own form (an sbatch script, a fork
    request, a container command, a Batch job's command) and never parses a
    command line back.

    Attributes:
        folder: the job folder's URL (a path, or ``s3://...``) as the task must see it.
        backend: the backend's name (``JobEnvironment().cluster`` in the task).
        offset: added to the task's index; an array split at the backend's cap starts here.
        logs: ``"separate"`` (stdout and stderr into the folder), ``"merge"`` (both into stdout),
            or ``"none"`` (the task's streams stay where the backend put them: a terminal).
        task_env: canonical name (``index``, ``rank``...) -> the variable that holds it in the
            task (``SLURM_ARRAY_TASK_ID``); ``jobsub.worker.CANONICAL`` lists the names.
        env: extra environment of the task: the user's ``env``, what the folder's store
            needs (an emulator's endpoint), and ``JOBSUB_SECRETS`` (``jobsub.trust``: what the
            task seals its results with), which a backend never writes into the folder.
        code_package: where the task finds the code package (a path, or an ``s3://``/``gs://`` URL),
            filled by the core for a backend whose keys are ``ContainerParameters``
            (``jobsub.cloud.container``); None: no package.
        tag: the name that finds this submission in the scheduler again (``<key>-<offset>``):
            a retried or interrupted submission is looked up by it, never made twice.
        cwd: the working directory of the process that made the submission, when another
            process submits it (a held submission, released later); None: this process's.
        sys_path: that process's ``sys.path`` (the local backend's tasks import from it); empty: this one's.
    """

    folder: str
    backend: str
    offset: int = 0
    logs: str = "separate"
    task_env: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    code_package: str | None = None
    tag: str = ""
    cwd: str | None = None
    sys_path: tuple[str, ...] = ()

    def module_args(self) -> list[str]:
        """``-m jobsub.worker FOLDER ...``: what follows the interpreter in the task's command."""
        args = ["-m", "jobsub.worker", self.folder, "--backend", self.backend]
        if self.logs != "none":
            args.append("--merge-logs" if self.logs == "merge" else "--logs")
        for name, variable in self.task_env.items():
            args += ["--env", f"{name}={variable}"]
        if self.offset:
            args += ["--offset", str(self.offset)]
        return args

    def command(self, python: str) -> list[str]:
        return [python, *self.module_args()]

    def replace(self, **changes: Any) -> Launch:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; the conformance suite runs the tests that apply (tests/conformance/).

    Attributes:
        time_limit: ``timeout_min`` is enforced and ends in TIMEOUT.
        memory_limit: ``mem_gb`` is enforced and ends in OUT_OF_MEMORY.
        ranks: ``tasks_per_node`` > 1 runs that many ranks at once.
        checkpoint: a checkpointable callable is signalled before its limit and run again.
        own_logs: a task's output is in ``job.stdout()``/``job.stderr()``.
        survives_client: jobs outlive the submitting process and are re-attached.
        isolated: a task runs in a process of its own: its crash or ``os._exit`` ends only it.
        reraise_original: ``result()`` raises the function's own exception (debug).
        local_folders: job folders on a local or shared path (the tasks see this machine's disk).
        object_store_folders: job folders on ``s3://``/``gs://`` stores.
        one_task_per_job: a job runs one task: ``nodes`` and ``tasks_per_node`` above 1 are refused.
        client_disk: with ``local_folders``, a task sees this machine's disk itself (Docker, Slurm),
            not only a volume holding the folders (Kubernetes' claim): a bucket folder's code
            package is then read from here rather than uploaded.
        env_shown: a task's environment is shown to whoever can read the scheduler's jobs
            (DescribeJobs, a console, a pod spec): ``pass_env`` and credentials in ``env`` are refused.

    ``check_folder`` and ``check_env`` hold the executor to what these say
    before anything is written.
    """

    time_limit: bool = True
    memory_limit: bool = True
    ranks: bool = True
    checkpoint: bool = True
    own_logs: bool = True
    survives_client: bool = True
    isolated: bool = True
    reraise_original: bool = False
    local_folders: bool = True
    object_store_folders: bool = False
    one_task_per_job: bool = False
    env_shown: bool = False
    client_disk: bool = True


def check_folder(backend: Backend, root: str, *, local: bool) -> None:
    """Refuse an executor folder the backend's tasks cannot use (``Capabilities``)."""
    caps, name = backend.capabilities, backend.name
    if local and not caps.local_folders:
        raise InvalidParameterError(
            f"{name} tasks cannot see {root} on this machine's disk: give the executor an object-store "
            "folder (s3://bucket/prefix/%j, gs://bucket/prefix/%j)"
        )
    if not local and not caps.object_store_folders:
        raise InvalidParameterError(f"the {name} backend needs job folders on a path its tasks can reach, not {root}")


def check_credentials(backend: Backend, storage: Storage) -> None:
    """Refuse, before anything is written, a folder store or a backend whose SDK finds no
    credentials at all: each names where it looked (``Storage.check_credentials``, the backend's
    ``gateways``' ``Gateway.check_credentials``); no request is sent."""
    storage.check_credentials()
    for gateway in backend.gateways():
        gateway.check_credentials()


def check_env(backend: Backend, common: CommonParameters) -> None:
    """Refuse what a backend's jobs cannot hold: several tasks (``one_task_per_job``), secrets bound
    for a task environment it shows to others (``env_shown``)."""
    if backend.capabilities.one_task_per_job and (common.nodes > 1 or common.tasks_per_node > 1):
        raise InvalidParameterError(
            f"the {backend.name} backend runs one task per job: use nodes=1 and tasks_per_node=1 "
            f"(nodes={common.nodes}, tasks_per_node={common.tasks_per_node})"
        )
    if not backend.capabilities.env_shown:
        return
    from ..cloud.container import credentials_in  # with the backends that need it

    name = backend.name
    if common.pass_env:
        raise InvalidParameterError(
            f"pass_env={common.pass_env}: the {name} backend shows a task's environment to whoever can read "
            f"its jobs; give the task secrets through its own secret store ({name}_secrets={{'NAME': ...}})"
        )
    found = credentials_in(common.env)
    if found:
        raise InvalidParameterError(
            f"env has {', '.join(found)}: credentials must not travel in a job's environment (the {name} backend "
            "shows it to whoever can read its jobs): give the job a role or service account of its own instead"
        )

# name -> "module:Class"; a module is imported the first time its backend is used
_REGISTRY: dict[str, tuple[str, str]] = {
    "local": ("jobsub.backends.local:LocalBackend", ""),
    "debug": ("jobsub.backends.debug:DebugBackend", ""),
    "slurm": ("jobsub.backends.slurm:SlurmBackend", ""),
    "docker": ("jobsub.backends.docker:DockerBackend", "pip install 'jobsub[docker]'"),
    "aws_batch": ("jobsub.backends.aws_batch:AWSBatchBackend", "pip install 'jobsub[aws]'"),
    "gcp_batch": ("jobsub.backends.gcp_batch:GCPBatchBackend", "pip install 'jobsub[gcp]'"),
    "kubernetes": ("jobsub.backends.kubernetes:KubernetesBackend", "pip install 'jobsub[k8s]'"),
}


PREFIX_ALIASES: dict[str, str] = {"k8s": "kubernetes"}
"""Short prefixes of backend keys (``k8s_namespace`` for ``kubernetes_namespace``)."""


class Backend:
    """Base class of backends: subclass it and implement the four primitives.

    Class attributes describe what is special about the backend:

    - ``name``: registry name, also the prefix of its keys in ``AutoExecutor``.
    - ``Parameters``: keyword-only dataclass of its own keys.
    - ``aliases``: its native spellings of common keys (``time`` -> ``timeout_min``),
      accepted by its own executor class for submitit compatibility.
    - ``task_env``: canonical name -> the variable holding it in a task
      (``{"index": "SLURM_ARRAY_TASK_ID", ...}``), passed to the worker.
    - ``poll_interval_s``: how often its state may be asked.
    - ``result_check_s``: how often a waiting ``Job`` looks for its result file in a folder on
      a disk (on an object store the folder's one shared listing is taken at most once a second,
      sooner early in a wait: ``JobFolder.has_results``).

    A backend that calls an SDK holds its gateway (``jobsub.cloud.gateway``) as ``self.api``;
    ``self.storage`` is the folder store of ``root``, opened on first use.
    """

    name: ClassVar[str] = ""
    Parameters: ClassVar[type] = NoParameters
    aliases: ClassVar[Mapping[str, str]] = {}
    task_env: ClassVar[Mapping[str, str]] = {}
    poll_interval_s: ClassVar[float] = 1.0
    result_check_s: ClassVar[float] = 0.25
    """How often a waiting ``Job`` looks for its result file: a ``stat``, cheap on a local
    disk, not on a busy shared file system."""
    result_grace_s: ClassVar[float] = 10.0
    """How long a result file may lag behind a final state (shared file systems cache attributes)."""
    capabilities: ClassVar[Capabilities] = Capabilities()
    auto_array_default: ClassVar[bool] = False
    """Whether separate ``submit`` calls are coalesced into arrays unless ``auto_array`` says
    otherwise: on for backends where each submission is a billed or rate-limited API call."""
    result_parameters: ClassVar[tuple[str, ...]] = ()
    """Its own keys that change what a task computes (an image, an interpreter): part of cache keys."""
    usual_pending_reasons: ClassVar[frozenset[str]] = frozenset()
    """The reasons of a pending job's ``Status`` (as ``states()`` words them, up to a first comma) that
    need no one's attention: waiting for its turn, for resources, for a dependency.  A wait that pends
    for another reason longer than ``JOBSUB_PENDING_WARN_S`` logs a warning naming it (``Job.wait``)."""
    records_cancel: ClassVar[bool] = False
    """Its ``cancel`` writes the task's CANCELLED exit record itself (the supervised backends: the
    record is what stops a task no supervisor holds); for the others ``Job.cancel`` writes it
    before it calls ``cancel`` (``Job.record_cancel``)."""
    end_record_lag_s: ClassVar[float] = 0.0
    """How long after a task's result the backend may still write its end record into the folder.
    ``result()`` waits that long at most for the record (``end_recorded``), so that a folder
    removed as soon as it returns (a temporary directory) is not written into afterwards."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._storage: Storage | None = None

    @property
    def storage(self) -> Storage:
        """The store of ``root``, opened on first use (a backend made only to be named or checked
        opens nothing; its SDK is imported when a folder is first read)."""
        if self._storage is None:
            from ..storage import open_storage

            self._storage = open_storage(self.root)
        return self._storage

    # -- the four primitives ----------------------------------------------------------
    def submit(self, launch: Launch, n_tasks: int, params: Resolved, folder: JobFolder, *, array: bool) -> str:
        """Start ``n_tasks`` copies of the worker ``launch`` describes (an array if ``array``).

        Returns the backend id; task ``i`` of an array has id ``f"{returned_id}_{i}"``.
        """
        raise NotImplementedError(f"{type(self).__name__}.submit")

    def states(self, backend_ids: Sequence[str]) -> dict[str, Status]:
        """The status of many jobs in one call; ids it does not know are ``LOST``."""
        raise NotImplementedError(f"{type(self).__name__}.states")

    def cancel(self, backend_ids: Sequence[str]) -> None:
        """Cancel jobs (array ids cancel every task)."""
        raise NotImplementedError(f"{type(self).__name__}.cancel")

    def end_recorded(self, backend_id: str, folder: JobFolder) -> bool:
        """Whether the backend has written all it writes into ``folder`` for this task's end."""
        return True

    def logs(self, backend_id: str, folder: JobFolder, index: int, rank: int) -> tuple[str | None, str | None]:
        """stdout and stderr of one task; by default what the worker wrote into the folder."""
        return folder.read_log(index, rank, "out"), folder.read_log(index, rank, "err")

    # -- optional hooks -------------------------------------------------------------------
    def max_array_size(self, params: Resolved) -> int | None:
        """Largest array one submission may hold (None: no limit); bigger ones are split."""
        return None

    def check(self) -> None:
        """Raise ``BackendError`` if the backend cannot be used (called at executor creation)."""

    def gateways(self) -> Sequence[Gateway]:
        """The SDK gateways it calls (``jobsub.cloud.gateway``), whose credentials are checked when an
        executor is created (``check_credentials``): by default its ``api`` attribute, if a gateway."""
        from ..cloud.gateway import Gateway

        api = self.__dict__.get("api")  # an instance attribute: a property (Docker's client) is not made here
        return (api,) if isinstance(api, Gateway) else ()

    def check_parameters(self, params: Resolved) -> None:
        """Raise ``InvalidParameterError`` for parameters no submission can go out with (a missing queue).

        Called by every ``submit``/``map_array`` before anything is pickled or
        coalesced, so that the error meets the line that caused it rather than a
        later ``job.result()`` of an automatic array that was never sent.
        """

    def config(self) -> dict[str, Any]:
        """JSON-safe constructor arguments, stored in meta.json to rebuild the backend on attach."""
        return {"root": self.root}

    def planned_id(self, launch: Launch, folder: JobFolder) -> str | None:
        """The id ``submit`` will return, when the backend decides it (the folder's key); None if the
        scheduler assigns it.  A known id is recorded with the submission before it is made: one
        write of ``meta.json`` instead of an intent and then the answer."""
        return None

    def find_submitted(self, launch: Launch, folder: JobFolder) -> str | None:
        """The id of a submission the backend accepted under ``launch.tag``, None if none.

        Asked when a submission was interrupted (the client died during it, or
        its answer was lost): the job is adopted rather than submitted twice.
        """
        return None

    def on_wait(self, backend_id: str) -> None:
        """A client is about to block on this job (the debug backend runs it now)."""

    def waits_for_array(self, upstream: Backend, job_ids: Sequence[str]) -> str | None:
        """One native dependency by which task i of an array waits only for ``job_ids[i]``, the
        i-th task of one array of ``upstream`` (AWS Batch's ``N_TO_N``); None: none exists."""
        return None

    max_native_dependencies: ClassVar[int | None] = None
    """How many jobs one submission may wait on natively (AWS Batch: 20); None: no limit.
    A submission taking more is held by jobsub instead."""

    def waits_natively(self, upstream: Backend, job_id: str) -> bool:
        """Whether this backend itself holds a task until job ``job_id`` of ``upstream`` succeeded.

        True where the scheduler has dependencies (Slurm's ``afterok`` on the
        same cluster, AWS Batch's ``dependsOn`` on a plain job of the same
        region) or a supervisor watches the upstream's folder (local,
        Docker).  Otherwise jobsub holds the submission in the client
        (``jobsub.hold``) and submits it once its upstreams succeeded.
        """
        return False


def known_backends() -> list[str]:
    return list(_REGISTRY)


def register_backend(name: str, target: str, install_hint: str = "") -> None:
    """Make ``name`` the backend whose class is ``target`` (``"package.module:Class"``), imported
    on first use.  A backend outside jobsub (a plugin, a test's toy) registers itself so; the
    executors and ``Job.attach`` of this process then find it."""
    _REGISTRY[name] = (target, install_hint)


def load_backend_class(name: str) -> type[Backend]:
    """Import a backend's module on first use."""
    try:
        target, hint = _REGISTRY[name]
    except KeyError:
        raise InvalidParameterError(f"unknown backend {name!r}; known backends: {', '.join(_REGISTRY)}") from None
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise BackendError(f"the {name!r} backend is not available in this version of jobsub") from exc
        raise BackendError(f"the {name!r} backend needs {exc.name!r}: {hint or 'install it'}") from exc
    cls: type[Backend] = getattr(module, cls_name)
    return cls


_instances: dict[tuple[str, str], Backend] = {}
_instances_lock = threading.Lock()


def get_backend(name: str, config: Mapping[str, Any]) -> Backend:
    """The one backend instance for (name, config) in this process.

    Sharing instances is what lets every ``Job`` handle of a backend share one
    state poll, whichever executor or ``Job(folder, id)`` call created it.
    """
    key = _instance_key(name, config)
    with _instances_lock:
        backend = _instances.get(key)
        if backend is None:
            backend = load_backend_class(name)(**config)
            # the same backend asked for with its defaults spelled out (as meta.json records
            # them) or left out (as an executor does) is one instance, with one poller
            backend = _instances.setdefault(_instance_key(name, backend.config()), backend)
            _instances[key] = backend
        return backend


def _instance_key(name: str, config: Mapping[str, Any]) -> tuple[str, str]:
    return name, json.dumps(dict(config), sort_keys=True, default=str)
