"""Container launch, written once: the code package and the task's command line.

Every backend whose tasks run in a container of an image with only Python
in it (Docker, AWS Batch, GCP Batch, Kubernetes) declares its keys as a
subclass of ``ContainerParameters``; the core then ships the code and the
backend renders one command::

    jobsub.submission.start ─> ship_code(spec, storage, ...)              (the core, before submit)
        build_code_package(code_root or the submitter's cwd, ...)         cached by digest on this machine
        <root>/.code/<digest16>.tar.gz   a local root: built there; a bucket: uploaded once per
                                         digest, unless the tasks see this machine's disk (Docker)
        ─> Launch.code_package = its path or URL
    backend.submit ─> container_command(launch, spec.python, setup=...)   the container's argv
        python3 -c BOOTSTRAP <code_package> /tmp/jobsub-code/<digest16> -- -m jobsub.worker FOLDER ...

The task reads the package with its own identity (a job role, a service
account): the bootstrap fetches ``s3://`` and ``gs://`` URLs through the
SDK in the image, never through a presigned URL that would carry the
submitter's credentials and could expire while the job waits in its queue.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shlex
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..folder import CODE_PACKAGES, code_package_key
from ..packaging import DEFAULT_MAX_MB, bootstrap_command, build_code_package, default_cache_dir
from ..storage import Storage

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..backends.base import Launch
    from ..folder import JobFolder

__all__ = [
    "CODE_DIR",
    "CREDENTIAL_VARIABLES",
    "ContainerParameters",
    "code_dir",
    "container_command",
    "credentials_in",
    "passed_credentials",
    "scheduled_launch",
    "ship_code",
]

CODE_DIR = "/tmp/jobsub-code"
"""Where a task unpacks the code package (``<CODE_DIR>/<digest16>``), inside its container."""


@dataclass(kw_only=True)
class ContainerParameters:
    """The keys every container backend has (``<backend>_<key>`` with AutoExecutor).

    A backend's own parameters subclass this (``@dataclass(kw_only=True)``):
    the core ships the code when ``package_code`` is on, and ``debug`` runs
    the tasks attached on this machine's Docker engine (``jobsub.cloud.attached``).
    """

    image: str = ""
    """Image of the task containers; it needs only ``python3`` and cloudpickle (code is packaged),
    plus the SDK of the folder's store (boto3, google-cloud-storage) for a bucket folder."""
    python: str = "python3"
    """The image's interpreter."""
    package_code: bool = True
    """Ship the ``*.py`` of ``code_root`` and jobsub itself with the job (else the image must hold them)."""
    code_root: str | None = None
    """Tree to package; default the submitting process's working directory."""
    code_includes: list[str] = field(default_factory=list)
    """Globs packaged on top of ``**/*.py`` (e.g. ``"configs/*.yaml"``)."""
    code_excludes: list[str] = field(default_factory=list)
    """Globs left out on top of ``jobsub.packaging.DEFAULT_EXCLUDES``."""
    code_max_mb: float = DEFAULT_MAX_MB
    """Refuse to ship more than this (``CodePackageTooLargeError`` lists the largest files)."""
    debug: bool = False
    """Run the tasks on this machine's Docker engine instead, attached, one after the other, before
    ``submit`` returns: the same image, command and folder (``breakpoint()`` works in a terminal)."""


CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
"""Variables of the SDKs' credential chains that hold a secret by value.  A task reading a bucket
folder on an engine of this machine takes them from the client by name (``passed_credentials``);
they never go into a job's recorded or displayed environment (``credentials_in``)."""


def credentials_in(names: Iterable[str]) -> list[str]:
    """The credential variables among ``names`` (of an ``env`` or ``pass_env``), sorted."""
    return sorted(set(names) & set(CREDENTIAL_VARIABLES))


def passed_credentials(folder: JobFolder) -> list[str]:
    """What a task on this machine's engine takes from the client's environment, by name, to read
    its folder: the store's credentials when the folder is a bucket, nothing on a local disk."""
    return list(CREDENTIAL_VARIABLES) if folder.local_file() is None else []


_uploaded: set[str] = set()
_uploaded_lock = threading.Lock()


def ship_code(spec: ContainerParameters, storage: Storage, *, cwd: str | None, upload: bool) -> str | None:
    """Package the code and put it where tasks find it; its path or URL (``Launch.code_package``).

    Args:
        spec: the backend's keys (``package_code`` off: None, nothing shipped).
        storage: the executor's root; a local root keeps its packages in ``<root>/.code/``
            (their cache), others are cached in ``default_cache_dir()``.
        cwd: the submitting process's working directory (the default ``code_root``).
        upload: the tasks cannot read this machine's disk: the package goes to
            ``<root>/.code/<digest16>.tar.gz``, once per digest (by any process: an object
            already there is not sent again).
    """
    if not spec.package_code:
        return None
    local_root = storage.local_file("")
    package = build_code_package(
        spec.code_root or cwd or os.getcwd(), spec.code_includes, spec.code_excludes,
        cache_dir=storage.local_file(CODE_PACKAGES) if local_root else default_cache_dir(),
        max_mb=spec.code_max_mb, exclude_paths=[local_root] if local_root else [],
    )
    if local_root or not upload:
        return str(package.path)
    # named by the tarball's sha256, which the URL also carries (in the task's command, not the
    # bucket): the task's bootstrap refuses a package someone replaced (jobsub.trust's threat model)
    digest = _tarball_sha256(str(package.path), package.size)
    key = code_package_key(digest[:32])
    url = f"{storage.url.rstrip('/')}/{key}#sha256={digest}"
    with _uploaded_lock:
        if url not in _uploaded:
            if not storage.exists(key):
                storage.write_bytes(key, package.path.read_bytes())
            _uploaded.add(url)
    return url


def scheduled_launch(launch: Launch, **task_env: str) -> Launch:
    """The launch as a cloud scheduler's container runs it.

    Its streams stay the container's, which the provider ships to its log service as they come
    (live, and nothing re-uploaded to the folder: ``jobsub.cloud.logs``); SIGTERM is the
    preemption notice (a Spot VM reclaimed: a checkpointable callable checkpoints on it, and the
    attempt the scheduler retries resumes from there); ``task_env`` names more of the
    scheduler's variables (``array_job_id``).
    """
    return launch.replace(
        logs="none", env={**launch.env, "JOBSUB_PREEMPT_SIGNAL": "TERM"}, task_env={**launch.task_env, **task_env}
    )


@functools.lru_cache(maxsize=64)
def _tarball_sha256(path: str, size: int) -> str:
    """A package's tarball never changes once built (it is named by its content): hashed once."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def code_dir(code_package: str) -> str:
    """Where a task unpacks ``code_package`` (named by its digest: tasks of one code share it)."""
    return f"{CODE_DIR}/{os.path.basename(code_package).removesuffix('.tar.gz')}"


def container_command(
    launch: Launch,
    python: str,
    *,
    unpack_dir: str | None = None,
    offset: str | None = None,
    setup: Sequence[str] = (),
) -> list[str]:
    """The argv of a task's container: the worker, behind the bootstrap when there is a code package.

    Args:
        launch: what to run; ``launch.code_package`` (a path, URL, a scheduler's placeholder, or
            ``""`` when ``unpack_dir`` is ready) makes the bootstrap fetch and unpack it first.
        python: the image's interpreter.
        unpack_dir: where the package is unpacked (default ``code_dir(launch.code_package)``).
        offset: the ``--offset`` as text, always given (a scheduler's placeholder such as
            ``Ref::jobsub_offset``); None: ``launch.offset``, given when not 0.
        setup: shell lines run first (``setup``); the worker then replaces the shell (``exec``).
    """
    module_args = launch.module_args()
    if offset is not None:
        module_args = [*launch.replace(offset=0).module_args(), "--offset", offset]
    argv = [python, *module_args]
    if launch.code_package is not None:
        argv = bootstrap_command(python, launch.code_package, unpack_dir or code_dir(launch.code_package), module_args)
    if setup:
        argv = ["/bin/sh", "-c", "\n".join([*setup, "exec " + shlex.join(argv)])]
    return argv
