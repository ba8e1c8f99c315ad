"""Giving a written job folder to its backend: the second half of ``submit``.

::

    executor.submit ─> pickle, JobFolder.create, call.pkl, args/, meta.json ─┬─> start()   now
                                                                          └─> held: hold.py calls
                                                                              start() later, in
                                                                              whichever process
                                                                              releases it

Everything ``start`` needs is in the folder (``meta.json``: backend and its
configuration, parameters, the submitting process's working directory), so
a process that did not write the folder can submit it: that is what makes a
held submission survive its client.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import trust
from ._version import __version__ as _version
from .backends.base import Backend, Launch
from .errors import InvalidParameterError, JobsubError, SubmissionError
from .folder import JobFolder, register_id
from .parameters import CommonParameters, Resolved

__all__ = ["launch_for", "link_logs", "new_meta", "params_from_meta", "reconcile", "start", "task_id"]

logger = logging.getLogger("jobsub")


def new_meta(backend: Backend, params: Resolved, count: int, ranks: int, array: bool) -> dict[str, Any]:
    """The submission record, as written before anything is submitted."""
    return {
        "backend": backend.name,
        "backend_config": backend.config(),
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
        "failures_marked": True,  # failed/ marks every failed task before its result (JobFolder.write_result)
    }


def params_from_meta(backend: Backend, meta: dict[str, Any], dependencies: Sequence[str] = ()) -> Resolved:
    """The parameters a submission was made with, read back from its record."""
    recorded = meta.get("parameters", {})
    try:
        common = CommonParameters(**recorded.get("common", {}))
        specific = type(backend).Parameters(**recorded.get("specific", {}))
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(f"the parameters recorded in meta.json cannot be read back: {exc}") from exc
    return Resolved(common=common, specific=specific, dependencies=tuple(dependencies))


def launch_for(
    backend: Backend, folder: JobFolder, offset: int, params: Resolved, origin: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> Launch:
    """The ``Launch`` of one part of a submission; ``origin``: the submitting process's cwd and sys.path.

    The task's environment carries the secrets its results are sealed with
    (``jobsub.trust``): its backend's own channel to the task, never the folder.  A container
    backend's code is packaged and shipped here (once per digest), before it is asked.
    """
    origin = origin or {}
    return Launch(
        folder=folder.url,
        backend=backend.name,
        offset=offset,
        logs="merge" if params.common.stderr_to_stdout else "separate",
        task_env=dict(backend.task_env),
        env={**folder.storage.task_env(), **params.common.env, **trust.secrets_env(folder.key, meta)},
        code_package=_code_package(backend, folder, params, origin.get("cwd")),
        tag=f"{folder.key}-{offset}",
        cwd=origin.get("cwd"),
        sys_path=tuple(origin.get("sys_path", ())),
    )


def start(
    backend: Backend,
    folder: JobFolder,
    params: Resolved,
    meta: dict[str, Any],
    *,
    origin: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Submit the written folder (each part of an array split at the backend's cap); return its record.

    A backend that names its ids in advance (``planned_id``) has them recorded
    in one write before it is asked.  Otherwise the intent (offset, count,
    tag) is written before the backend calls, so a process killed while the
    backend accepts the submission leaves a record that finds it again
    (``reconcile``), never a job that runs unseen.  If one part is refused, the parts that started are cancelled and
    ``SubmissionError`` raised; the folder is left to the caller.
    """
    count = int(meta["count"])
    cap = backend.max_array_size(params) or count
    intents: list[dict[str, Any]] = [
        {"offset": o, "count": min(cap, count - o), "tag": f"{folder.key}-{o}", "at": time.time()}
        for o in range(0, count, cap)
    ]
    meta["dependencies"] = list(params.dependencies)
    launches = [launch_for(backend, folder, i["offset"], params, origin, meta) for i in intents]
    planned = [backend.planned_id(launch, folder) for launch in launches]
    if all(planned):  # the backend names it: recorded before it is made, in one write
        meta["submissions"] = [
            {"id": p, "offset": i["offset"], "count": i["count"], "submitted_at": time.time()}
            for p, i in zip(planned, intents)
        ]
        meta.pop("intents", None)
        folder.write_meta(meta)
        _submit(backend, launches, intents, params, folder, bool(meta["array"]))
    else:
        meta["intents"] = intents
        folder.write_meta(meta)
        meta["submissions"] = _submit(backend, launches, intents, params, folder, bool(meta["array"]))
        del meta["intents"]
        folder.write_meta(meta)
    for part in meta["submissions"]:
        if part["id"] != folder.key:  # an id that is the key itself (local) is found without an index
            register_id(folder.storage, part["id"], folder.key)
    return meta


def _code_package(backend: Backend, folder: JobFolder, params: Resolved, cwd: str | None) -> str | None:
    """A container backend's code package, shipped where its tasks find it (``jobsub.cloud.container``)."""
    from .cloud.container import ContainerParameters, ship_code

    if not isinstance(params.specific, ContainerParameters):
        return None
    caps = backend.capabilities
    upload = not (caps.local_folders and caps.client_disk)  # tasks that cannot read this machine's disk
    return ship_code(params.specific, folder.storage, cwd=cwd, upload=upload)


def _submit(
    backend: Backend, launches: list[Launch], intents: list[dict[str, Any]], params: Resolved,
    folder: JobFolder, array: bool,
) -> list[dict[str, Any]]:
    """One backend call per part; if one is refused, cancel the parts that started."""
    parts: list[dict[str, Any]] = []
    try:
        for launch, intent in zip(launches, intents):
            backend_id = backend.submit(launch, intent["count"], params, folder, array=array)
            parts.append({"id": backend_id, "offset": intent["offset"], "count": intent["count"], "submitted_at": time.time()})
    except Exception as exc:
        if parts:
            with contextlib.suppress(Exception):
                backend.cancel([p["id"] for p in parts])
        if isinstance(exc, JobsubError):
            raise
        raise SubmissionError(f"{backend.name} refused the submission: {exc}") from exc
    return parts


def task_id(meta: dict[str, Any], index: int) -> str | None:
    """The backend id of task ``index`` of a submission, None if it was not submitted (yet)."""
    for sub in meta.get("submissions", []):
        if sub["offset"] <= index < sub["offset"] + sub["count"]:
            return f"{sub['id']}_{index - sub['offset']}" if meta["array"] else str(sub["id"])
    return None


def held_id(key: str, index: int, array: bool) -> str:
    """What names a held job until its backend gives it an id: its folder's key (``<key>_<i>`` in an array).

    ``Job(folder, held_id)`` finds it, before and after its release.
    """
    return f"{key}_{index}" if array else key


def link_logs(folder: JobFolder, template: str | None, meta: dict[str, Any]) -> None:
    """Make ``runs/%j`` style paths exist: a link named after each backend id (local folders only;
    a link that cannot be made is no error).  submitit's log names are linked by the tasks."""
    if folder.path is None or template is None:
        return
    for sub in meta.get("submissions", []):
        link = Path(template.replace("%j", sub["id"])).expanduser().absolute()
        if link != folder.path:
            with contextlib.suppress(OSError):
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(folder.path, target_is_directory=True)


def unlink_logs(removed: dict[JobFolder, list[str]], template: str | None) -> int:
    """Remove the ``runs/%j`` links ``link_logs`` made to folders that were removed (their backend
    ids given): those ``template`` names, and any in the folders' own roots.  A link is removed only
    if it points at one of those folders; returns how many were."""
    targets = {os.path.realpath(folder.path) for folder in removed if folder.path is not None}
    candidates = [
        Path(template.replace("%j", backend_id)).expanduser().absolute()
        for ids in removed.values() for backend_id in ids
    ] if template else []
    for parent in {folder.path.parent for folder in removed if folder.path is not None}:
        with contextlib.suppress(OSError), os.scandir(parent) as entries:
            candidates += [Path(entry.path) for entry in entries if entry.is_symlink()]
    count = 0
    for link in dict.fromkeys(candidates):
        with contextlib.suppress(OSError):
            if link.is_symlink() and os.path.realpath(link.parent / os.readlink(link)) in targets:
                link.unlink()
                count += 1
    return count


ORPHANED_AFTER_S = 300.0
"""An intent without its answer for this long: its client died (a client's own submission, even
retried with backoff, records its answer well within this).  A younger one is someone's at work."""


def reconcile(folder: JobFolder, meta: dict[str, Any], backend: Backend) -> dict[str, Any]:
    """Finish the record of a submission whose client died while the backend accepted it.

    The executor writes its intent (offset, count, tag) before each backend
    submission; an intent still there means nobody recorded the answer.  The
    backend is asked for the submission by its tag: found, it is recorded
    (and can be watched, attached to, cancelled); not found, it never went out.
    """
    intents = meta.get("intents") or []
    done = {sub["offset"] for sub in meta.get("submissions", [])}
    found_any = False
    for intent in intents:
        if intent["offset"] in done:
            continue
        launch = Launch(folder=folder.url, backend=backend.name, offset=intent["offset"], tag=intent["tag"])
        found = backend.find_submitted(launch, folder)
        if found is None:
            continue  # not (yet) at the backend: a client may still be submitting it; nothing is written
        age = time.time() - float(intent.get("at", 0))
        if age > ORPHANED_AFTER_S:
            logger.warning(
                "submission %s of %s was made but not recorded for %.0f s (its client died?): found as %s",
                intent["tag"], folder.url, age, found,
            )
        else:  # its client (another process, healthy) is recording it right now: the same record
            logger.debug("submission %s of %s is at the backend as %s: recorded here too", intent["tag"], folder.url, found)
        meta.setdefault("submissions", []).append(
            {"id": found, "offset": intent["offset"], "count": intent["count"], "submitted_at": time.time()}
        )
        register_id(folder.storage, found, folder.key)
        found_any = True
    if found_any:  # the same record the client would have written: no race can lose its own
        meta["submissions"] = sorted(meta["submissions"], key=lambda sub: sub["offset"])
        if {sub["offset"] for sub in meta["submissions"]} >= {i["offset"] for i in intents}:
            del meta["intents"]
        folder.write_meta(meta)
    return meta
