"""Executors: turn calls into job folders and backend submissions.

::

    ex.submit(fn, *args) ─┐   cache=True: an identical earlier call's Job instead    (jobsub.cache)
    ex.map_array(fn, xs) ─┤   auto_array: submits within a window coalesce into one (jobsub.autoarray)
    with ex.batch(): ... ─┘
        ─> pickle (fails here, naming the culprit); Jobs among the arguments -> JobRefs
        ─> JobFolder.create(): call.pkl, args/<i>.pkl, meta.json written BEFORE submitting
        ─> upstreams the backend waits for itself (or none) ─> submission.start(): backend.submit
           (ONE call per array, split only at the backend's cap)
           others (another backend, a debug job, a held one) ─> held (jobsub.hold): released by
           whichever process watches the folder once they succeed
        ─> Job handles (share one StatePoller)

``Executor(folder, backend="slurm")`` takes the backend's own key names
(submitit's ``SlurmExecutor`` style); ``AutoExecutor`` takes prefixed ones
(``slurm_partition``) and picks the backend.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .autoarray import Coalescer, DelayedJob
from .backends.base import (
    PREFIX_ALIASES,
    Backend,
    check_credentials,
    check_debug,
    check_env,
    check_folder,
    get_backend,
    known_backends,
    load_backend_class,
)
from .cache import Cache, CallKey, call_key, settings_digest
from .calls import DelayedSubmission, dumps_checked
from .errors import (
    InvalidParameterError,
    InvalidStateError,
    JobCancelledError,
    JobsubError,
    SubmissionError,
)
from .folder import JobFolder, split_folder_template
from .hashing import function_digest
from .hold import hold, plan, record
from .job import Job
from .joblist import JobList, as_plain, rebuild
from .parameters import (
    CommonParameters,
    Resolved,
    check_bounds,
    check_value,
    did_you_mean,
    field_types,
    unknown_key_error,
)
from .polling import poller_for
from .states import JobState
from .storage import open_storage
from .submission import held_id, link_logs, new_meta, start, task_id
from .unstarted import end_unstarted

__all__ = ["AutoExecutor", "Executor", "cached"]

logger = logging.getLogger("jobsub")

R = TypeVar("R")
E = TypeVar("E", bound="Executor")
Claim = tuple[CallKey, int]
"""A cache entry a new submission creates: the call's key and the entry's generation."""

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
        local = self.storage.local_path("")
        self.folder: Path | str = local if local is not None else self.storage.url
        """Where job folders go (submitit's attribute): a ``Path``, or a bucket's URL."""
        if isinstance(backend, str):
            backend = get_backend(backend, {"root": self.storage.url})
        self.backend = backend
        check_folder(backend, root, local=local is not None)  # before anything is written
        check_credentials(backend, self.storage)
        self.storage.check_writable()  # a folder (or bucket) that cannot be written fails here, not later
        backend.check()
        self._common: dict[str, Any] = {}
        self._specific: dict[str, dict[str, Any]] = {}
        self._overrides: dict[str, dict[str, Any]] = {}
        self._batch: list[tuple[DelayedJob, DelayedSubmission]] | None = None
        self._allow_implicit = False
        self._cache: Cache | None = None
        self._coalescer: Coalescer | None = None
        if parameters:
            self.update_parameters(**parameters)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(folder={str(self.folder)!r}, backend={self.backend.name!r}, parameters={self.parameters})"

    def _repr_html_(self) -> str:
        from .display import executor_html

        return executor_html(type(self).__name__, self.backend.name, str(self.folder), self.parameters)

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
        if self._coalescer is not None:  # calls coalescing so far go out with the parameters they were made with
            self._coalescer.flush_all()
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
        check_env(self.backend, common)
        check_debug(self.backend, specific)
        resolved = Resolved(common=common, specific=specific, dependencies=tuple(dependencies))
        self.backend.check_parameters(resolved)
        return resolved

    # -- submission -------------------------------------------------------------------------
    def submit(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> Job[R]:
        """Submit ``fn(*args, **kwargs)``; returns at once with a ``Job``.

        With ``cache=True`` an identical earlier call is returned instead
        (finished, or reattached while it runs); with ``auto_array`` the call
        may go out later, in one array with its neighbours (``job.job_id`` sends it).
        """
        _check_callable(fn, "submit")
        call = DelayedSubmission(fn, *as_plain(args), **as_plain(kwargs))
        if self._batch is not None:
            placeholder: DelayedJob = DelayedJob.__new__(DelayedJob)
            object.__setattr__(placeholder, "_executor", self)
            self._batch.append((placeholder, call))
            return placeholder
        params = self._resolve()
        claims: list[Claim | None] = [None]
        if params.common.cache:
            found, claims = self._lookup([call], params)
            if found[0] is not None:
                return found[0]
        if params.common.auto_array if params.common.auto_array is not None else self.backend.auto_array_default:
            return self._coalesce(call, claims[0], params)
        return self._submit_calls([call], array=False, claims=claims)[0]

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
        calls = [DelayedSubmission(fn, *as_plain(args)) for args in zip(*columns)]
        if not calls:
            warnings.warn("map_array received no items: nothing submitted", RuntimeWarning, stacklevel=2)
            return JobList()
        return JobList(self._submit_array(calls))

    def submit_array(self, fns: Sequence[Callable[[], R]]) -> list[Job[R]]:
        """Submit argument-less callables (e.g. checkpointable instances) as ONE array."""
        for fn in fns:
            _check_callable(fn, "submit_array")
        calls = [DelayedSubmission(fn) for fn in fns]
        if not calls:
            warnings.warn("submit_array received no callables: nothing submitted", RuntimeWarning, stacklevel=2)
            return []
        return self._submit_array(calls)

    def _submit_array(self, calls: list[DelayedSubmission]) -> list[Job[Any]]:
        """One array of the calls the cache does not answer (all of them without ``cache``)."""
        params = self._resolve()
        if not params.common.cache:
            return self._submit_calls(calls, array=True)
        found, claims = self._lookup(calls, params)
        missing = [i for i, job in enumerate(found) if job is None]
        if missing:
            submitted = self._submit_calls([calls[i] for i in missing], array=True, claims=[claims[i] for i in missing])
            for i, job in zip(missing, submitted):
                found[i] = job
        return [job for job in found if job is not None]

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

    def _flush(self, pending: list[tuple[DelayedJob, DelayedSubmission]]) -> None:
        if not pending:
            if not self._allow_implicit:
                warnings.warn("no submission inside 'with executor.batch():'", RuntimeWarning, stacklevel=3)
            return
        placeholders, calls = zip(*pending)
        # one submission is a plain job, as submitit makes it (``123``, not ``123_0``)
        for placeholder, job in zip(placeholders, self._submit_calls(list(calls), array=len(calls) > 1)):
            placeholder._promote(job)

    # -- cache and automatic arrays ---------------------------------------------------------------
    def _lookup(self, calls: list[DelayedSubmission], params: Resolved) -> tuple[list[Job[Any] | None], list[Claim | None]]:
        """The cache's answer for each call: its job (a hit), else what a new submission claims."""
        if self._cache is None:
            self._cache = Cache(self.storage)
        codes: dict[int, str] = {}
        settings = settings_digest(params, self.backend)
        keyed: list[tuple[int, CallKey]] = []
        for i, call in enumerate(calls):
            try:
                code = codes.get(id(call.function)) or codes.setdefault(id(call.function), function_digest(call.function))
                keyed.append((i, call_key(call, params, self.backend, code=code, settings=settings)))
            except (TypeError, ValueError, AttributeError, RecursionError, JobsubError) as exc:
                logger.warning("cannot hash a call of %r for the cache (%s): it is submitted uncached", call.function, exc)
        found: list[Job[Any] | None] = [None] * len(calls)
        claims: list[Claim | None] = [None] * len(calls)
        for (i, key), lookup in zip(keyed, self._cache.lookup_many([key for _, key in keyed])):
            found[i] = lookup.job
            claims[i] = None if lookup.job else (key, lookup.generation)
        return found, claims

    def _claim(self, folder: JobFolder, claims: list[Claim | None]) -> dict[int, Job[Any]]:
        """Claim the cache entries of a new submission; the jobs of the calls another process claimed first."""
        assert self._cache is not None
        others: dict[int, Job[Any]] = {}
        claimed: dict[str, tuple[int, int]] = {}
        for index, claim in enumerate(claims):
            if claim is None:
                continue
            key, generation = claim
            for _ in range(5):
                if self._cache.claim(key, generation, folder, index):
                    claimed[key.key] = (generation, index)
                    break
                lookup = self._cache.lookup(key)  # another process submitted the same call just now
                if lookup.job is not None:
                    logger.debug("cache: %s was submitted by another process meanwhile: reattached", key.function)
                    others[index] = lookup.job
                    break
                generation = lookup.generation
        first = next((c for c in claims if c is not None), None)
        if first is not None:
            self._cache.record(folder, claimed, first[0])
        return others

    def _coalesce(self, call: DelayedSubmission, claim: Claim | None, params: Resolved) -> Job[Any]:
        """Queue the call for an automatic array; its Jobs and pickling are handled now (errors raise here)."""
        upstream = _replace_jobs(call)  # a coalesced job among the arguments is sent first
        task = dumps_checked((call.args, call.kwargs), "the arguments", call=call)
        if self._coalescer is None:
            self._coalescer = Coalescer(self._submit_coalesced)
        common = params.common
        cap = min(self.backend.max_array_size(params) or 10_000, 10_000)
        return self._coalescer.add(
            ("fn", id(call.function)), (call, upstream, task, claim), window_s=common.auto_array_window_s,
            min_size=common.auto_array_min, cap=cap, cache_key=claim[0].key if claim else None,
        )

    def _submit_coalesced(self, items: list[Any], array: bool) -> list[Job[Any]]:
        return self._submit_calls(
            [item[0] for item in items], array=array, claims=[item[3] for item in items],
            prepared=[(item[1], item[2]) for item in items],
        )

    def _origin(self) -> dict[str, Any]:
        """What a held submission needs of this process to be submitted by another one."""
        return {
            "cwd": os.getcwd(), "sys_path": [p or os.getcwd() for p in sys.path],
            "template": self._template, "root": str(self.folder),
        }

    # -- writing and submitting -------------------------------------------------------------------
    def _submit_calls(
        self,
        calls: list[DelayedSubmission],
        *,
        array: bool,
        claims: list[Claim | None] | None = None,
        prepared: list[tuple[list[Job[Any]], bytes]] | None = None,
    ) -> list[Job[Any]]:
        """Write the calls into one new folder, then submit it, or hold it until its upstreams succeed.

        Its steps: payload (pickled, checked) -> folder (written before anything is submitted)
        -> start or hold -> handles.  ``prepared``: each call's upstream jobs and pickled
        arguments, when made already (automatic arrays); ``claims``: the cache entries to create.
        """
        claims = claims or [None] * len(calls)
        # Jobs among the arguments travel as references to their folders (JobRef); where this
        # backend waits for them itself they are native dependencies, else the submission is held
        upstream = [p[0] for p in prepared] if prepared is not None else [_replace_jobs(c) for c in calls]
        unique = list({(j.folder.url, j.index): j for jobs in upstream for j in jobs}.values())
        self._check_reachable(unique)
        dependencies, holding = plan(self.backend, unique, upstream if array else ())
        params = self._resolve(dependencies)
        payload = self._payload(calls, params, array=array, prepared=prepared)
        folder = JobFolder.create(self.storage, mode=params.common.folder_mode)
        try:
            meta, others = self._write_folder(folder, payload, params, calls, upstream, holding, claims)
            if len(others) == len(calls):  # every call is another process's submission already
                folder.delete()
                return [others[i] for i in range(len(calls))]
            if holding:
                hold(folder, meta)
            else:
                meta = start(self.backend, folder, params, meta)
        except BaseException:
            folder.delete()
            raise
        return self._handles(folder, meta, others, held=bool(holding))

    def _payload(
        self, calls: list[DelayedSubmission], params: Resolved, *, array: bool,
        prepared: list[tuple[list[Job[Any]], bytes]] | None,
    ) -> _Payload:
        """The pickled call and arguments, checked against ``max_pickle_size_gb`` before anything is written."""
        common = params.common
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
        if prepared is not None:
            task_bytes = [p[1] for p in prepared]
        elif shared:
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
        name = _qualname(function) if shared else f"{len(set(map(_qualname, (c.function for c in calls))))} functions"
        return _Payload(call_bytes, task_bytes, shard, name, array)

    def _write_folder(
        self, folder: JobFolder, payload: _Payload, params: Resolved, calls: list[DelayedSubmission],
        upstream: list[list[Job[Any]]], holding: list[Job[Any]], claims: list[Claim | None],
    ) -> tuple[dict[str, Any], dict[int, Job[Any]]]:
        """Write call, arguments and ``meta.json``; claim the cache entries.  Returns the meta and the
        jobs of the calls another process submitted first (their tasks here end unstarted)."""
        common = params.common
        ranks = common.tasks_per_node * common.nodes
        folder.write_call(payload.call)
        folder.write_args(payload.tasks, payload.shard)
        meta = new_meta(self.backend, params, len(calls), ranks, payload.array)
        meta["function"] = payload.function
        waits_for = {
            str(i): [[j.folder.url, j.index, list(j.rank_list)] for j in jobs] for i, jobs in enumerate(upstream) if jobs
        }
        if waits_for:
            meta["waits_for"] = waits_for
        keys = {str(i): claim[0].key for i, claim in enumerate(claims) if claim is not None}
        if keys:
            meta["cache_keys"] = keys
        if holding:
            meta["held"] = record(holding, self._origin())
        folder.write_meta(meta)
        _record_dependents(folder, upstream)
        others = self._claim(folder, claims) if keys else {}
        if len(others) < len(calls):
            for index, other in others.items():
                duplicate = JobCancelledError(
                    f"not run: the same call is job {other.job_id} (cache)", state=JobState.CANCELLED,
                    reason="a duplicate of a cached call",
                )
                end_unstarted(folder, index, ranks, duplicate)
        return meta, others

    def _handles(
        self, folder: JobFolder, meta: dict[str, Any], others: dict[int, Job[Any]], *, held: bool
    ) -> list[Job[Any]]:
        """The handles of a written submission: held ones named by the folder, else the backend's ids."""
        count, ranks, array = int(meta["count"]), int(meta["ranks"]), bool(meta["array"])
        keys: dict[str, str] = meta.get("cache_keys", {})
        if held:
            handles = [
                Job.bind(self.backend, folder, held_id(folder.key, i, array), i, ranks, held=True, cache_key=keys.get(str(i)))
                for i in range(count)
            ]
            return [others.get(i, job) for i, job in enumerate(handles)]
        link_logs(folder, self._template, meta)
        jobs = [
            Job.bind(self.backend, folder, task_id(meta, i) or "", i, ranks, cache_key=keys.get(str(i))) for i in range(count)
        ]
        poller_for(self.backend).track([job.job_id for job in jobs], submitted=True)
        if others:  # calls another process submitted meanwhile: this array must not run them
            with contextlib.suppress(JobsubError):
                self.backend.cancel([jobs[i].job_id for i in others])
        return [others.get(i, job) for i, job in enumerate(jobs)]

    def _check_reachable(self, upstream: list[Job[Any]]) -> None:
        """A task reads the results of the jobs it takes from their folders: a task of a backend
        whose tasks see no disk of this machine (the cloud) cannot read one on this machine's disk."""
        if self.backend.capabilities.local_folders:
            return
        for job in upstream:
            if job.folder.local_file() is not None:
                raise InvalidParameterError(
                    f"job {job.job_id} is an argument, but its folder {job.folder.url} is on this machine's "
                    f"disk, which tasks of the {self.backend.name} backend (folder {self.storage.url}) cannot "
                    "read: put the upstream job's folder in a bucket too"
                )

    def _submitit_logs_dir(self) -> str | None:
        """Where submitit would have put a job's log files: its own folder ("", for ``runs/%j``) or
        the executor's; the task links submitit's names there to its logs.  None for a bucket."""
        if not isinstance(self.folder, Path):
            return None
        return "" if self._template is not None else str(self.folder)


class AutoExecutor(Executor):
    """Picks a backend and takes backend-prefixed keys (``slurm_partition=...``).

    Args:
        folder: where job folders go (``%j`` accepted).
        cluster: a backend name; None = ``$JOBSUB_CLUSTER``, else the profile's, else
            ``slurm`` when ``sbatch`` is on PATH, else ``local``.
        profile: a named configuration of ``jobsub.toml`` or ``[tool.jobsub]`` of
            ``pyproject.toml`` (``jobsub.profiles``); None = ``$JOBSUB_PROFILE``, else none.
        **kwargs: prefixed parameters (``slurm_max_num_timeout=3``) or common ones.
    """

    def __init__(
        self, folder: str | os.PathLike[str], cluster: str | None = None, *, profile: str | None = None, **kwargs: Any
    ) -> None:
        from .profiles import apply, load_profile

        self.profile = load_profile(profile)
        """The profile in use (``profile=`` or ``$JOBSUB_PROFILE``; ``jobsub.profiles``), None if none."""
        chosen = self.profile.cluster if self.profile is not None else None
        self.cluster = cluster or os.environ.get("JOBSUB_CLUSTER") or chosen or self.which()
        self.cluster = PREFIX_ALIASES.get(self.cluster, self.cluster)  # "k8s", as its keys' prefix, is kubernetes
        if self.cluster not in known_backends():
            where = f"{self.profile.where('cluster')}: " if chosen == self.cluster and self.profile else ""
            raise InvalidParameterError(
                f"{where}unknown cluster {self.cluster!r}; known: {', '.join(known_backends())}."
                + did_you_mean(self.cluster, known_backends())
            )
        super().__init__(folder, self.cluster)
        if self.profile is not None:
            apply(self.profile, self.update_parameters)
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
        written, (short, _, rest) = key, key.partition("_")
        if short in PREFIX_ALIASES:  # k8s_namespace is kubernetes_namespace
            key = f"{PREFIX_ALIASES[short]}_{rest}"
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
            self._store(self._overrides.setdefault(name, {}), CommonParameters, common, value, shown=written)
        elif sub in specific:
            self._store(self._specific.setdefault(name, {}), backend.Parameters, sub, value, shown=written)
        else:  # named as the user spelled the prefix (k8s_image, not kubernetes_image)
            prefix = short if short in PREFIX_ALIASES else name
            valid = [f"{prefix}_{k}" for k in (*specific, *backend.aliases, *_COMMON_TYPES)]
            raise unknown_key_error(written, valid, f"the {name} backend")

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


@dataclasses.dataclass(frozen=True)
class _Payload:
    """A submission pickled and checked, not written yet."""

    call: bytes
    tasks: list[bytes]
    shard: int
    function: str
    """How graphs and ``jobsub status`` name what runs (``module.fn``, or "3 functions")."""
    array: bool


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


def _record_dependents(folder: JobFolder, upstream: list[list[Job[Any]]]) -> None:
    """Tell each upstream's folder which of its tasks this submission takes (``dependents/``):
    ``cancel()`` of an upstream, from any process, then reaches this one."""
    pairs: dict[str, tuple[JobFolder, list[list[int]]]] = {}
    for index, jobs in enumerate(upstream):
        for job in jobs:
            pairs.setdefault(job.folder.url, (job.folder, []))[1].append([job.index, index])
    for up_folder, links in pairs.values():
        try:
            up_folder.write_dependent(folder.key, {"url": folder.url, "pairs": links})
        except OSError as exc:  # another user's folder: its cancel will not reach this one
            logger.debug("cannot record in %s that %s depends on it: %s", up_folder.url, folder.url, exc)


def cached(executor: E) -> E:
    """A copy of ``executor`` that caches its calls (as ``update_parameters(cache=True)``).

    ``jobsub.cached(ex).submit(fn, x)`` returns the job of an identical earlier
    call (finished, or still running) instead of submitting it again.
    """
    clone = copy.copy(executor)
    clone._common = {**executor._common, "cache": True}
    clone._specific = {name: dict(keys) for name, keys in executor._specific.items()}
    clone._overrides = {name: dict(keys) for name, keys in executor._overrides.items()}
    clone._coalescer = None
    return clone


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
        return obj

    call.args = tuple(rebuild(a, swap) for a in call.args)
    call.kwargs = {k: rebuild(v, swap) for k, v in call.kwargs.items()}
    return found


def _qualname(fn: Any) -> str:
    """How graphs and logs name a submitted function."""
    return str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)


def _check_callable(fn: Any, method: str) -> None:
    """A value that cannot be called fails here, not in the job after it waited in a queue."""
    if not callable(fn):
        raise TypeError(f"{method}() needs a callable to run, got {type(fn).__name__} {fn!r}")
