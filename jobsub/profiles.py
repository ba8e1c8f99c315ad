"""Profiles: named executor settings in ``jobsub.toml`` or ``[tool.jobsub]`` of ``pyproject.toml``.

::

    # jobsub.toml (or [tool.jobsub.profiles.gpu] in pyproject.toml)
    [profiles.gpu]
    cluster = "slurm"
    timeout_min = 120
    gpus_per_node = 1
    slurm_partition = "gpu"

    ex = jobsub.AutoExecutor("runs", profile="gpu")     # or JOBSUB_PROFILE=gpu

The file is the first ``jobsub.toml``, else the first ``pyproject.toml`` with a
``[tool.jobsub]`` table, in the working directory or one of its parents
(``JOBSUB_CONFIG`` names one directly).  A profile holds ``cluster`` and any
key ``update_parameters`` takes.  The environment overrides a profile key by
key: ``JOBSUB_SET_TIMEOUT_MIN=30`` (a TOML value; a bare word is a string).
Arguments given to the executor override both.  Every error names the file,
the profile and the key.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NamedTuple

from .errors import InvalidParameterError
from .parameters import did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["Profile", "find_config", "load_profile"]

OVERRIDE_PREFIX = "JOBSUB_SET_"
"""``JOBSUB_SET_<KEY>=<value>`` overrides ``<key>`` of the profile in use."""


class Profile(NamedTuple):
    """A profile's settings, and where they come from (for the errors that name them)."""

    name: str
    source: str
    cluster: str | None
    parameters: dict[str, Any]

    def where(self, key: str | None = None) -> str:
        """``jobsub.toml, profile 'gpu', key 'mem_gb'``: what an error about it starts with."""
        return f"{self.source}, profile {self.name!r}" + (f", key {key!r}" if key else "")


def find_config(start: Path | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The configuration file in use and its ``jobsub`` table; None if there is none."""
    named = os.environ.get("JOBSUB_CONFIG")
    if named:
        path = Path(named)
        return path, _table(path, _read(path))
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        own = folder / "jobsub.toml"
        if own.is_file():
            return own, _read(own)
        project = folder / "pyproject.toml"
        if project.is_file():
            table = _read(project).get("tool", {}).get("jobsub")
            if isinstance(table, dict):
                return project, table
    return None


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as stream:
            return tomllib.load(stream)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidParameterError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise InvalidParameterError(f"{path}: cannot be read: {exc.strerror}") from None


def _table(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """A named file is a ``jobsub.toml``, or a ``pyproject.toml`` whose ``[tool.jobsub]`` counts."""
    if path.name == "pyproject.toml":
        table = data.get("tool", {}).get("jobsub", {})
        return table if isinstance(table, dict) else {}
    return data


def load_profile(name: str | None = None, start: Path | None = None) -> Profile | None:
    """The profile ``name`` (else ``$JOBSUB_PROFILE``), with the environment's overrides; None if neither.

    Raises:
        InvalidParameterError: no configuration file, no such profile (with the closest
            name), or a value that is not a table: the file and the profile are named.
    """
    name = name or os.environ.get("JOBSUB_PROFILE") or None
    if name is None:
        return None
    found = find_config(start)
    if found is None:
        raise InvalidParameterError(
            f"profile {name!r} asked for, but no jobsub.toml nor pyproject.toml with [tool.jobsub] was found "
            f"in {Path.cwd()} or its parents (JOBSUB_CONFIG names a file)"
        )
    path, table = found
    source = str(path)
    profiles = table.get("profiles", {})
    if not isinstance(profiles, dict) or name not in profiles:
        known = sorted(profiles) if isinstance(profiles, dict) else []
        hint = did_you_mean(name, known)
        listed = f" (profiles there: {', '.join(known)})" if known else " (it defines none: [profiles.NAME])"
        raise InvalidParameterError(f"{source}: no profile {name!r}{listed}.{hint}")
    settings = profiles[name]
    if not isinstance(settings, dict):
        raise InvalidParameterError(f"{source}: profile {name!r} must be a table of parameters, not {settings!r}")
    settings = {**settings, **_overrides()}
    cluster = settings.pop("cluster", None)
    if cluster is not None and not isinstance(cluster, str):
        raise InvalidParameterError(f"{source}, profile {name!r}, key 'cluster': a backend name, not {cluster!r}")
    return Profile(name, source, cluster, settings)


def _overrides() -> dict[str, Any]:
    """``JOBSUB_SET_<KEY>`` variables: TOML values (``30``, ``true``, ``["a"]``), else strings."""
    found: dict[str, Any] = {}
    for variable, text in os.environ.items():
        if variable.startswith(OVERRIDE_PREFIX) and len(variable) > len(OVERRIDE_PREFIX):
            key = variable[len(OVERRIDE_PREFIX) :].lower()
            try:
                found[key] = tomllib.loads(f"v = {text}")["v"]
            except tomllib.TOMLDecodeError:
                found[key] = text
    return found


def apply(profile: Profile, update: Any) -> None:
    """``update(**parameters)`` with the profile's keys, one at a time: an error names the key's origin."""
    for key, value in profile.parameters.items():
        try:
            update(**{key: value})
        except InvalidParameterError as exc:
            origin = f"{OVERRIDE_PREFIX}{key.upper()}" if f"{OVERRIDE_PREFIX}{key.upper()}" in os.environ else None
            where = profile.where(key) + (f" (set by {origin})" if origin else "")
            raise InvalidParameterError(f"{where}: {exc}") from None
