"""Submission parameters: one dataclass per scope, validated from its own fields.

``CommonParameters`` holds the keys every backend understands; each backend
declares a keyword-only dataclass of its own keys (``SlurmParameters`` ...).
The dataclass fields are the single source of truth for what is valid, for
type checks and for the "valid keys are ..." message.

With ``AutoExecutor`` a backend's keys are prefixed by its name
(``slurm_partition``); ``slurm_timeout_min`` overrides ``timeout_min`` on
Slurm only.  ``None`` always means "not set".
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Union

from .errors import InvalidParameterError
from .units import slurm_time_parameter

__all__ = [
    "CommonParameters", "NoParameters", "Parse", "Resolved", "check_bounds", "check_value", "field_types",
    "unknown_key_error",
]


@dataclass(frozen=True)
class Parse:
    """Field metadata (``Annotated[T, Parse(fn)]``): ``fn(key as typed, value)`` runs before the type check.

    It lets a field take a scheduler's own spelling of its value (Slurm's
    ``"01:30:00"`` for a time, ``"4G"`` for memory) and refuse a malformed
    one when it is set, with the key named as the user typed it.
    """

    fn: Callable[[str, Any], Any]


@dataclass(kw_only=True)
class CommonParameters:
    """Keys every backend understands (``ex.update_parameters(timeout_min=30, ...)``)."""

    name: str = "jobsub"
    """Job name shown by the scheduler."""
    timeout_min: Annotated[float | None, Parse(slurm_time_parameter)] = field(default=None, metadata={"above": 0})
    """Time limit in minutes; the job is killed and reports TIMEOUT after it. None: the backend's default.

    Slurm's ``time`` spellings of this key also take Slurm's strings (``"01:30:00"``, see ``jobsub.units``)."""
    mem_gb: float | None = field(default=None, metadata={"above": 0})
    """Memory limit per node in GB."""
    cpus_per_task: int | None = field(default=None, metadata={"min": 1})
    """CPU cores of each rank. None: the backend's default."""
    gpus_per_node: int | None = field(default=None, metadata={"min": 0})
    """GPUs of each node (the local backend hands out ``local_visible_gpus``)."""
    tasks_per_node: int = field(default=1, metadata={"min": 1})
    """Ranks per node: the function runs this many times, each with its own rank."""
    nodes: int = field(default=1, metadata={"min": 1})
    """Nodes of a multi-node job (Slurm); ranks are ``nodes * tasks_per_node``."""
    stderr_to_stdout: bool = False
    """One log for both streams (``job.stdout()``)."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run before the worker (where the backend runs a shell)."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment variables of the job.  Their values are written in plain text into the
    job's folder (``meta.json``, the backend's spec, Slurm's script): pass secrets by name with
    ``pass_env`` instead."""
    pass_env: list[str] = field(default_factory=list)
    """Names of variables the job takes from the submitting process's environment (tokens, keys),
    by reference: the values go to the task over the backend's own channel (Slurm exports the
    submitting environment; the local and Docker supervisors get them over their socket) and
    are never written to the folder."""
    array_parallelism: int | None = field(default=None, metadata={"min": 1})
    """At most this many tasks of one array run at once. None: the backend's default."""
    max_num_timeout: int = field(default=3, metadata={"min": 0})
    """How often a checkpointable job is requeued after a timeout."""
    max_pickle_size_gb: float = field(default=1.0, metadata={"above": 0})
    """Refuse submissions whose pickles add up to more than this."""
    signal_delay_s: int = field(default=90, metadata={"min": 0})
    """Seconds before the time limit when checkpointable jobs get their signal."""
    folder_mode: int | None = field(default=None, metadata={"min": 0, "max": 0o777})
    """Permissions of each job's folder on a local disk (``0o750``: the group reads it); by
    default the umask decides.  Never writable by others, whatever is asked."""
    cache: bool = False
    """An identical earlier call (same code, arguments and result-changing parameters) that
    finished well is returned as a completed job, one still queued or running is reattached,
    instead of submitting it again (``jobsub.cache``)."""
    auto_array: bool | None = None
    """Separate ``submit`` calls of one function made within ``auto_array_window_s`` go out as one
    array submission.  None: the backend's default (on where each submission is a billed API call)."""
    auto_array_window_s: float = field(default=1.0, metadata={"above": 0})
    """How long the first ``submit`` of a coalesced array waits for more (``job.job_id`` sends it at once)."""
    auto_array_min: int = field(default=2, metadata={"min": 1})
    """Fewer coalesced calls than this go out as separate submissions."""


@dataclass(kw_only=True)
class NoParameters:
    """For backends without keys of their own."""


@dataclass(frozen=True)
class Resolved:
    """What a backend receives: the common keys and its own, both fully typed."""

    common: CommonParameters
    specific: Any
    dependencies: tuple[str, ...] = ()
    """Backend ids this submission must wait for (jobs of the same backend passed as arguments)."""


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Field name -> resolved type hint of a parameters dataclass (``Annotated`` parsers kept)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def check_value(key: str, hint: Any, value: Any) -> Any:
    """Return ``value`` converted to ``hint`` where that is lossless; raise if it does not fit."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        hint, *extras = typing.get_args(hint)
        for extra in extras:
            if isinstance(extra, Parse):
                value = extra.fn(key, value)
        return check_value(key, hint, value)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        errors = []
        for option in options:
            try:
                return check_value(key, option, value)
            except InvalidParameterError as exc:
                errors.append(str(exc))
        raise InvalidParameterError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {_type_name(hint)}")
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        if isinstance(value, str):
            value = [value]
        if isinstance(value, Iterable) and not isinstance(value, Mapping):
            return [check_value(key, item, v) for v in value]
    elif origin is dict:
        key_t, val_t = typing.get_args(hint) or (Any, Any)
        if isinstance(value, Mapping):
            return {check_value(key, key_t, k): check_value(key, val_t, v) for k, v in value.items()}
    elif isinstance(hint, type) and isinstance(value, hint):
        return value
    raise InvalidParameterError(
        f"parameter {key!r} expects {_type_name(hint)}, got {type(value).__name__} {value!r}"
    )


def check_bounds(owner: type, name: str, value: Any, shown: str) -> None:
    """The bounds a parameters dataclass declares in its fields' metadata.

    ``min`` is inclusive, ``above`` exclusive: ``nodes=0`` would otherwise run
    nothing and report success, ``timeout_min=0`` mean something different
    to each scheduler.  ``shown`` is the key as the user typed it.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    bounds: Mapping[str, Any] = next((f.metadata for f in dataclasses.fields(owner) if f.name == name), {})
    if "min" in bounds and value < bounds["min"]:
        raise InvalidParameterError(f"{shown}={value!r}: must be at least {bounds['min']}")
    if "above" in bounds and value <= bounds["above"]:
        raise InvalidParameterError(f"{shown}={value!r}: must be more than {bounds['above']}")
    if "max" in bounds and value > bounds["max"]:
        raise InvalidParameterError(f"{shown}={value!r}: must be at most {bounds['max']!r}")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the closest known name (a typo), else an empty string."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def unknown_key_error(key: str, valid: Iterable[str], context: str) -> InvalidParameterError:
    """The error for an unknown key: the closest valid key, then all of them."""
    valid = sorted(set(valid))
    hint = did_you_mean(key, valid)
    return InvalidParameterError(
        f"unknown parameter {key!r} for {context}.{hint}\nValid parameters: {', '.join(valid)}"
    )
