"""Executors: turn calls into job folders and backend submissions.

::

    ex.submit(fn, *args) ─┐
    ex.map_array(fn, xs) ─┼─> pickle (fails here, naming the culprit) ─> JobFolder.create()
    with ex.batch(): ... ─┘     call.pkl, args/<i>.pkl, meta.json written BEFORE submitting
                                  │
                                  └─> backend.submit(worker command, N, params)   (ONE call per array,
                                        │                                          split only at the
                                        └─> Job handles (share one StatePoller)    backend's cap)

``Executor(folder, backend="slurm")`` takes the backend's own key names
(submitit's ``SlurmExecutor`` style); ``AutoExecutor`` takes prefixed ones
(``slurm_partition``) and picks the backend.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ._version import __version__ as _version
from .backends.base import Backend, Launch, get_backend, known_backends, load_backend_class
from .calls import DelayedSubmission, dumps_checked
from .errors import InvalidParameterError, InvalidStateError, JobsubError, SubmissionError
from .folder import JobFolder, register_id, split_folder_template
from .job import Job
from .parameters import (
    CommonParameters,
    Resolved,
    check_bounds,
    check_value,
    field_types,
    unknown_key_error,
)
from .polling import poller_for
from .storage import open_storage

__all__ = ["AutoExecutor", "Executor"]

logger = logging.getLogger("jobsub")

R = TypeVar("R")

_COMMON_TYPES = field_types(CommonParameters)


class Executor:
    """Submits Python calls to one backend.

    Args:
        folder: where job folders go (a path; ``%j`` in it is accepted as in submitit).
        backend: backend name (``"local"``, ``"debug"``, ``"slurm"``, ...) or instance.
        **parameters: initial parameters, as for ``update_parameters``.
    """

    job_class: type[Job[Any]] = Job
    """The type of the handles ``submit`` returns (submitit's attribute)."""

    def __init__(self, folder: str | os.PathLike[str], backend: str | Backend = "local", **parameters: Any) -> None:
        self._folder_arg = os.fspath(folder)
        root, self._template = split_folder_template(folder)
        self.storage = open_storage(root)
        self.storage.check_writable()  # a folder (or bucket) that cannot be written fails here, not later
        local = self.storage.local_path("")
        self.folder: Path | str = local if local is not None else self.storage.url
        """Where job folders go (submitit's attribute): a ``Path``, or a bucket's URL."""
        if isinstance(backend, str):
            backend = get_backend(backend, {"root": self.storage.url})
        self.backend = backend
        backend.check()
        if local is None and not backend.capabilities.object_store_folders:
            raise InvalidParameterError(
                f"the {backend.name} backend needs job folders on a path its tasks can reach, not {root}"
            )
        self._common: dict[str, Any] = {}
        self._specific: dict[str, dict[str, Any]] = {}
        self._overrides: dict[str, dict[str, Any]] = {}
        self._batch: list[tuple[_DelayedJob, DelayedSubmission]] | None = None
        self._allow_implicit = False
        if parameters:
            self.update_parameters(**parameters)

    # -- parameters -------------------------------------------------------------------------
    def name(self) -> str:
        """The backend's name (submitit's ``Executor.name()``)."""
        return self.backend.name

    @property
    def parameters(self) -> dict[str, Any]:
        """The parameters set so far (common and this backend's own)."""
        merged = dict(self._common)
        merged.update(self._overrides.get(self.backend.name, {}))
        merged.update(self._specific.get(self.backend.name, {}))
        return merged

    def update_parameters(self, **kwargs: Any) -> None:
        """Set parameters; ``None`` means "not set".

        Raises:
            InvalidParameterError: unknown key (with the closest valid one) or a bad value.
        """
        if self._batch is not None:
            raise InvalidStateError("parameters cannot change inside 'with executor.batch():'")
        for key, value in kwargs.items():
            self._set(key, value)

    def _set(self, key: str, value: Any) -> None:
        backend = type(self.backend)
        specific = field_types(backend.Parameters)
        if key in _COMMON_TYPES:
            self._store(self._common, CommonParameters, key, value, shown=key)
        elif key in backend.aliases:
            self._store(self._common, CommonParameters, backend.aliases[key], value, shown=key)
        elif key in specific:
            self._store(self._specific.setdefault(backend.name, {}), backend.Parameters, key, value, shown=key)
        else:
            valid = [*_COMMON_TYPES, *backend.aliases, *specific]
            raise unknown_key_error(key, valid, f"the {backend.name} backend")

    @staticmethod
    def _store(target: dict[str, Any], owner: type, key: str, value: Any, *, shown: str) -> None:
        """Check ``value`` against ``owner``'s field ``key`` (type, bounds), naming it as the user did."""
        if value is None:
            target.pop(key, None)
            return
        checked = check_value(shown, field_types(owner)[key], value)
        check_bounds(owner, key, checked, shown)
        target[key] = checked

    def _resolve(self, dependencies: Sequence[str] = ()) -> Resolved:
        name = self.backend.name
        common = CommonParameters(**{**self._common, **self._overrides.get(name, {})})
        try:
            specific = type(self.backend).Parameters(**self._specific.get(name, {}))
        except (TypeError, ValueError) as exc:
            raise InvalidParameterError(f"invalid {name} parameters: {exc}") from exc
        return Resolved(common=common, specific=specific, dependencies=tuple(dependencies))

    # -- submission -------------------------------------------------------------------------
    def submit(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> Job[R]:
        """Submit ``fn(*args, **kwargs)``; returns at once with a ``Job``."""
        _check_callable(fn, "submit")
        call = DelayedSubmission(fn, *args, **kwargs)
        if self._batch is not None:
            placeholder: _DelayedJob = _DelayedJob.__new__(_DelayedJob)
            object.__setattr__(placeholder, "_executor", self)
            self._batch.append((placeholder, call))
            return placeholder
        return self._submit_calls([call], array=False)[0]

    def map_array(self, fn: Callable[..., R], *iterables: Iterable[Any]) -> list[Job[R]]:
        """Submit ``fn(*args)`` for each ``args`` in ``zip(*iterables)`` as ONE array."""
        _check_callable(fn, "map_array")
        columns = [list(items) for items in iterables]
        if len({len(c) for c in columns}) > 1:
            lengths = ", ".join(str(len(c)) for c in columns)
            warnings.warn(
                f"map_array received iterables of different lengths ({lengths}): like zip, it submits "
                f"{min(len(c) for c in columns)} jobs and ignores the rest",
                RuntimeWarning, stacklevel=2,
            )
        calls = [DelayedSubmission(fn, *args) for args in zip(*columns)]
        if not calls:
            warnings.warn("map_array received no items: nothing submitted", RuntimeWarning, stacklevel=2)
            return []
        return self._submit_calls(calls, array=True)

    def submit_array(self, fns: Sequence[Callable[[], R]]) -> list[Job[R]]:
        """Submit argument-less callables (e.g. checkpointable instances) as ONE array."""
        for fn in fns:
            _check_callable(fn, "submit_array")
        calls = [DelayedSubmission(fn) for fn in fns]
        if not calls:
            warnings.warn("submit_array received no callables: nothing submitted", RuntimeWarning, stacklevel=2)
            return []
        return self._submit_calls(calls, array=True)

    @contextlib.contextmanager
    def batch(self, allow_implicit_submissions: bool = False) -> Iterator[None]:
        """Collect the ``submit`` calls of the block into ONE array submitted on exit.

        Jobs cannot be used inside the block (they do not exist yet); an
        exception inside the block submits nothing.
        """
        if self._batch is not None:
            raise InvalidStateError("'with executor.batch():' blocks cannot be nested")
        self._batch = []
        self._allow_implicit = allow_implicit_submissions
        try:
            yield
        except BaseException:
            logger.error("an error inside 'with executor.batch():' cancelled its %d submissions", len(self._batch))
            raise
        else:
            pending = self._batch
            self._batch = None
            self._flush(pending)
        finally:
            self._batch = None

    def _flush(self, pending: list[tuple[_DelayedJob, DelayedSubmission]]) -> None:
        if not pending:
            if not self._allow_implicit:
                warnings.warn("no submission inside 'with executor.batch():'", RuntimeWarning, stacklevel=3)
            return
        placeholders, calls = zip(*pending)
        # one submission is a plain job, as submitit makes it (``123``, not ``123_0``)
        for placeholder, job in zip(placeholders, self._submit_calls(list(calls), array=len(calls) > 1)):
            placeholder._promote(job)

    def _submit_calls(self, calls: list[DelayedSubmission], *, array: bool) -> list[Job[Any]]:
        # Jobs among the arguments travel as references to their folders (JobRef); those of this
        # backend become native dependencies where it has them (Slurm's afterok)
        upstream = [_replace_jobs(c) for c in calls]
        dependencies = sorted({j.job_id for jobs in upstream for j in jobs if j.backend == self.backend.name})
        waits_for = {
            str(i): [[j.folder.url, j.index, list(j._rank_list)] for j in jobs] for i, jobs in enumerate(upstream) if jobs
        }
        params = self._resolve(dependencies)
        common = params.common
        ranks = common.tasks_per_node * common.nodes
        function = calls[0].function
        shared = all(c.function is function for c in calls)
        spec = {
            "function": function if shared else None,
            "timeout_min": common.timeout_min,
            "max_num_timeout": common.max_num_timeout,
            "signal_delay_s": common.signal_delay_s,
            "submitit_logs": self._submitit_logs_dir(),
        }
        items: list[int | None] = list(range(len(calls))) if array else [None]
        if shared:
            dumps_checked(function, "the function", call=calls[0])
            task_bytes = [dumps_checked((c.args, c.kwargs), "the arguments", call=c, item=i) for c, i in zip(calls, items)]
        else:
            task_bytes = [dumps_checked(c, "the submission", call=c, item=i) for c, i in zip(calls, items)]
        shard = _shard_size(folder_is_local=self.storage.local_file("") is not None, task_bytes=task_bytes)
        spec["shard"] = shard
        call_bytes = dumps_checked(spec, "the submitted function")
        total = len(call_bytes) + sum(map(len, task_bytes))
        if total > common.max_pickle_size_gb * 1024**3:
            raise SubmissionError(
                f"this submission pickles {total / 1024**3:.2f} GB, over max_pickle_size_gb="
                f"{common.max_pickle_size_gb}; pass paths to large data instead of the data itself, "
                "or raise max_pickle_size_gb"
            )
        folder = JobFolder.create(self.storage, mode=common.folder_mode)
        try:
            folder.write_call(call_bytes)
            folder.write_args(task_bytes, shard)
            meta = self._meta(params, len(calls), ranks, array)
            if waits_for:
                meta["waits_for"] = waits_for
            cap = self.backend.max_array_size(params) or len(calls)
            intents: list[dict[str, Any]] = [
                {"offset": o, "count": min(cap, len(calls) - o), "tag": f"{folder.key}-{o}"}
                for o in range(0, len(calls), cap)
            ]
            planned = [self.backend.planned_id(self._launch(folder, i["offset"], params), folder) for i in intents]
            if all(planned):  # the backend names it: recorded before it is made, in one write
                meta["submissions"] = [
                    {"id": p, "offset": i["offset"], "count": i["count"], "submitted_at": time.time()}
                    for p, i in zip(planned, intents)
                ]
                folder.write_meta(meta)
                self._start(folder, params, intents, array)
            else:
                # the intent first: a client killed while the backend accepts the submission leaves
                # a record that finds the job again (by its tag), never one that runs unseen
                meta["intents"] = intents
                folder.write_meta(meta)
                meta["submissions"] = self._start(folder, params, intents, array)
                del meta["intents"]
                folder.write_meta(meta)
        except BaseException:
            folder.delete()
            raise
        jobs: list[Job[Any]] = []
        for sub in meta["submissions"]:
            if sub["id"] != folder.key:  # an id that is the key itself (local) is found without an index
                register_id(folder.storage, sub["id"], folder.key)
            self._link_template(sub["id"], folder)
            for local in range(sub["count"]):
                job_id = f"{sub['id']}_{local}" if array else sub["id"]
                jobs.append(Job._create(self.backend, folder, job_id, sub["offset"] + local, ranks))
        poller_for(self.backend).track([job.job_id for job in jobs], submitted=True)
        return jobs

    def _start(
        self, folder: JobFolder, params: Resolved, intents: list[dict[str, Any]], array: bool
    ) -> list[dict[str, Any]]:
        """Submit each part (an array split at the backend's cap); cancel what started if one fails."""
        parts: list[dict[str, Any]] = []
        try:
            for intent in intents:
                launch = self._launch(folder, intent["offset"], params)
                backend_id = self.backend.submit(launch, intent["count"], params, folder, array=array)
                parts.append({"id": backend_id, "offset": intent["offset"], "count": intent["count"], "submitted_at": time.time()})
        except Exception as exc:
            if parts:
                with contextlib.suppress(Exception):
                    self.backend.cancel([p["id"] for p in parts])
            if isinstance(exc, JobsubError):
                raise
            raise SubmissionError(f"{self.backend.name} refused the submission: {exc}") from exc
        return parts

    def _launch(self, folder: JobFolder, offset: int, params: Resolved) -> Launch:
        return Launch(
            folder=folder.url,
            backend=self.backend.name,
            offset=offset,
            logs="merge" if params.common.stderr_to_stdout else "separate",
            task_env=dict(self.backend.task_env),
            env={**folder.storage.task_env(), **params.common.env},
            tag=f"{folder.key}-{offset}",
        )

    def _meta(self, params: Resolved, count: int, ranks: int, array: bool) -> dict[str, Any]:
        return {
            "backend": self.backend.name,
            "backend_config": self.backend.config(),
            "array": array,
            "count": count,
            "ranks": ranks,
            "parameters": {
                "common": dataclasses.asdict(params.common),
                "specific": dataclasses.asdict(params.specific),
            },
            "dependencies": list(params.dependencies),
            "submitted_at": time.time(),
            "jobsub_version": _version,
            "python": sys.version.split()[0],
            "cwd": os.getcwd(),
            "submissions": [],
        }

    def _link_template(self, backend_id: str, folder: JobFolder) -> None:
        """Make ``runs/%j`` style paths exist: a link named after the job id."""
        if self._template is None or folder.path is None:
            return
        link = Path(self._template.replace("%j", backend_id)).expanduser().absolute()
        if link != folder.path:
            with contextlib.suppress(OSError):
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(folder.path, target_is_directory=True)

    def _submitit_logs_dir(self) -> str | None:
        """Where submitit would have put a job's log files: its own folder ("", for ``runs/%j``) or
        the executor's; the task links submitit's names there to its logs.  None for a bucket."""
        if not isinstance(self.folder, Path):
            return None
        return "" if self._template is not None else str(self.folder)


class _DelayedJob(Job[Any]):
    """What ``submit`` returns inside ``batch()``: unusable until the block ends.

    It has no attributes of its own, so any use of the Job API lands in
    ``__getattr__``; when the block ends it becomes the real ``Job``.
    """

    _executor: Executor

    def _promote(self, job: Job[Any]) -> None:
        object.__setattr__(self, "__class__", Job)
        self.__dict__.update(job.__dict__)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        executor = object.__getattribute__(self, "_executor")
        if executor._allow_implicit and executor._batch is not None:
            pending = executor._batch
            executor._batch = []
            executor._flush(pending)
            return getattr(self, name)
        raise InvalidStateError(
            f"job.{name.lstrip('_')} is not available inside 'with executor.batch():': jobs are submitted "
            "when the block ends; keep the handles and use them after it"
        )

    def __del__(self) -> None:
        pass

    def __repr__(self) -> str:
        return "Job<not submitted yet: inside 'with executor.batch():'>"


class AutoExecutor(Executor):
    """Picks a backend and takes backend-prefixed keys (``slurm_partition=...``).

    Args:
        folder: where job folders go (``%j`` accepted).
        cluster: a backend name; None = ``$JOBSUB_CLUSTER``, else ``slurm`` when
            ``sbatch`` is on PATH, else ``local``.
        **kwargs: prefixed parameters (``slurm_max_num_timeout=3``) or common ones.
    """

    def __init__(self, folder: str | os.PathLike[str], cluster: str | None = None, **kwargs: Any) -> None:
        self.cluster = cluster or self.which()
        if self.cluster not in known_backends():
            raise InvalidParameterError(
                f"unknown cluster {self.cluster!r}; known: {', '.join(known_backends())}"
            )
        super().__init__(folder, self.cluster)
        if kwargs:
            self.update_parameters(**kwargs)

    @staticmethod
    def which() -> str:
        """The backend AutoExecutor picks when no ``cluster`` is given."""
        env = os.environ.get("JOBSUB_CLUSTER")
        if env:
            return env
        return "slurm" if shutil.which("sbatch") else "local"

    def _set(self, key: str, value: Any) -> None:
        if key in _COMMON_TYPES:
            self._store(self._common, CommonParameters, key, value, shown=key)
            return
        name = next((n for n in sorted(known_backends(), key=len, reverse=True) if key.startswith(n + "_")), None)
        if name is None:
            owner = self._owner_of(key)
            if owner is not None:  # submitit took unprefixed backend keys, with a warning: so do we
                warnings.warn(
                    f"Setting {key!r} is deprecated. Use '{owner}_{key}' instead.", DeprecationWarning, stacklevel=4
                )
                self._set(f"{owner}_{key}", value)
                return
            valid = [*_COMMON_TYPES, *(f"{b}_..." for b in known_backends())]
            raise unknown_key_error(key, valid, "AutoExecutor (backend keys take a prefix such as 'slurm_')")
        sub = key[len(name) + 1 :]
        try:
            backend = load_backend_class(name)
        except JobsubError:
            # a backend this installation cannot load: keep its keys for whoever reads them
            self._specific.setdefault(name, {})[sub] = value
            return
        specific = field_types(backend.Parameters)
        common = backend.aliases.get(sub, sub)
        if common in _COMMON_TYPES:
            self._store(self._overrides.setdefault(name, {}), CommonParameters, common, value, shown=key)
        elif sub in specific:
            self._store(self._specific.setdefault(name, {}), backend.Parameters, sub, value, shown=key)
        else:
            valid = [f"{name}_{k}" for k in (*specific, *backend.aliases, *_COMMON_TYPES)]
            raise unknown_key_error(key, valid, f"the {name} backend")

    def _owner_of(self, key: str) -> str | None:
        """The backend whose own key ``key`` is: this executor's, else the first that has it."""
        owners = []
        for name in known_backends():
            try:
                backend = load_backend_class(name)
            except JobsubError:
                continue
            if key in field_types(backend.Parameters) or key in backend.aliases:
                owners.append(name)
        return self.cluster if self.cluster in owners else next(iter(owners), None)


_SHARD_BYTES = {True: 64 << 10, False: 1 << 20}
"""About how much one shard of arguments holds, on a disk and on an object store: each task reads
its whole shard, so a disk (where a file costs ~0.1 ms to write) takes smaller ones than a store
(where every object is a request)."""


def _shard_size(*, folder_is_local: bool, task_bytes: list[bytes]) -> int:
    """How many tasks' arguments go into one file or object (1: a file each)."""
    if len(task_bytes) < 2:
        return 1
    average = max(1, sum(map(len, task_bytes)) // len(task_bytes))
    return max(1, min(1000, _SHARD_BYTES[folder_is_local] // average))


def _replace_jobs(call: DelayedSubmission) -> list[Job[Any]]:
    """Put a ``JobRef`` in place of every ``Job`` among the call's arguments; return those jobs.

    Lists, tuples and dicts (exactly those types) are searched too, so
    ``submit(merge, [job_a, job_b])`` waits for both.
    """
    found: list[Job[Any]] = []

    def swap(obj: Any) -> Any:
        if isinstance(obj, Job):
            found.append(obj)
            return obj.ref()
        if type(obj) in (list, tuple):
            items = [swap(x) for x in obj]
            return obj if all(a is b for a, b in zip(items, obj)) else type(obj)(items)
        if type(obj) is dict:
            values = {k: swap(v) for k, v in obj.items()}
            return obj if all(values[k] is v for k, v in obj.items()) else values
        return obj

    call.args = tuple(swap(a) for a in call.args)
    call.kwargs = {k: swap(v) for k, v in call.kwargs.items()}
    return found


def _check_callable(fn: Any, method: str) -> None:
    """A value that cannot be called fails here, not in the job after it waited in a queue."""
    if not callable(fn):
        raise TypeError(f"{method}() needs a callable to run, got {type(fn).__name__} {fn!r}")
