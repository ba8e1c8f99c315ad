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
    backend: Backend, folder: JobFolder, offset: int, params: Resolved, origin: dict[str, Any] | None = None
) -> Launch:
    """The ``Launch`` of one part of a submission; ``origin``: the submitting process's cwd and sys.path."""
    origin = origin or {}
    return Launch(
        folder=folder.url,
        backend=backend.name,
        offset=offset,
        logs="merge" if params.common.stderr_to_stdout else "separate",
        task_env=dict(backend.task_env),
        env={**folder.storage.task_env(), **params.common.env},
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

    The intent (offset, count, tag) is written before each backend call, so
    a process killed while the backend accepts the submission leaves a
    record that finds it again (``job.reconcile``), never a job that runs
    unseen.  If one part is refused, the parts that started are cancelled and
    ``SubmissionError`` raised; the folder is left to the caller.
    """
    count = int(meta["count"])
    cap = backend.max_array_size(params) or count
    meta["intents"] = [
        {"offset": o, "count": min(cap, count - o), "tag": f"{folder.key}-{o}"} for o in range(0, count, cap)
    ]
    meta["dependencies"] = list(params.dependencies)
    folder.write_meta(meta)
    parts: list[dict[str, Any]] = []
    try:
        for intent in meta["intents"]:
            launch = launch_for(backend, folder, intent["offset"], params, origin)
            backend_id = backend.submit(launch, intent["count"], params, folder, array=bool(meta["array"]))
            parts.append({"id": backend_id, "offset": intent["offset"], "count": intent["count"], "submitted_at": time.time()})
    except Exception as exc:
        if parts:
            with contextlib.suppress(Exception):
                backend.cancel([p["id"] for p in parts])
        if isinstance(exc, JobsubError):
            raise
        raise SubmissionError(f"{backend.name} refused the submission: {exc}") from exc
    meta["submissions"] = parts
    del meta["intents"]
    folder.write_meta(meta)
    for part in parts:
        register_id(folder.storage, part["id"], folder.key)
    return meta


def task_id(meta: dict[str, Any], index: int) -> str | None:
    """The backend id of task ``index`` of a submission, None if it was not submitted (yet)."""
    for sub in meta.get("submissions", []):
        if sub["offset"] <= index < sub["offset"] + sub["count"]:
            return f"{sub['id']}_{index - sub['offset']}" if meta["array"] else str(sub["id"])
    return None


def link_logs(folder: JobFolder, template: str | None, root: str, meta: dict[str, Any]) -> None:
    """Make ``runs/%j`` style paths exist (a link named after each job id) and submitit's log names.

    Local folders only; a link that cannot be made is no error.
    """
    if folder.path is None:
        return
    merged = bool(meta.get("parameters", {}).get("common", {}).get("stderr_to_stdout", False))
    for sub in meta.get("submissions", []):
        where = root
        if template is not None:
            link = Path(template.replace("%j", sub["id"])).expanduser().absolute()
            where = str(folder.path)
            if link != folder.path:
                with contextlib.suppress(OSError):
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to(folder.path, target_is_directory=True)
        for local in range(sub["count"]):
            job_id = f"{sub['id']}_{local}" if meta["array"] else sub["id"]
            folder.link_submitit_logs(where, job_id, sub["offset"] + local, int(meta["ranks"]), merged)


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
        logger.warning(
            "submission %s of %s was made but not recorded (its client died?): found as %s",
            intent["tag"], folder.url, found,
        )
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
