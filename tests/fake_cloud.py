"""A cloud scheduler with no emulator, played on this machine: the toy backend's "service".

Its control plane is a directory of records (one per job, one file per task
state); its tasks are processes of this machine, each started detached by a
small runner that records when it starts and how it ends.  What is real: the
worker, the job folder, the processes.  What is played: the scheduler.

::

    submit(name, command, size, env)  ->  "<id>"      <home>/<id>/job.json, then one runner per task
    describe(ids)                     ->  {id: {"name", "size", "array", "tasks": [state, ...]}}
    cancel(id, index)                 ->  a "cancelled" mark, SIGTERM to the task's (or each) process group
    find(name)                        ->  the id of the job submitted under ``name``, if any

A task's state: ``QUEUED`` (not started), ``RUNNING``, ``SUCCEEDED``,
``FAILED <code>``, ``CANCELLED``.  ``python -m tests.fake_cloud`` is the runner.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class FakeCloud:
    """The scheduler's records under ``home`` (shared by every process that opens the same home)."""

    def __init__(self, home: str) -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)

    def submit(
        self, *, name: str, command: Sequence[str], size: int, array: bool, env: Mapping[str, str], cwd: str
    ) -> str:
        job_id = uuid.uuid4().hex[:12]
        record = self.home / job_id
        record.mkdir()
        (record / "job.json").write_text(json.dumps({"name": name, "size": size, "array": array}))
        for index in range(size):
            task_env = {**env, "TOY_TASK_INDEX": str(index), "TOY_JOB_ID": job_id}
            if array:
                task_env["TOY_ARRAY_JOB_ID"] = job_id
            # detached (sh starts it in the background and exits): a task outlives the client, as in a cloud
            subprocess.run(
                ["/bin/sh", "-c", '"$@" </dev/null >/dev/null 2>&1 &', "sh",
                 sys.executable, "-m", "tests.fake_cloud", str(record), str(index), *command],
                env=task_env, cwd=cwd, start_new_session=True, check=True,
            )
        return job_id

    def describe(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        found = {}
        for job_id in ids:
            record = self.home / job_id
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                job = json.loads((record / "job.json").read_text())
                job["tasks"] = [self._task_state(record, i) for i in range(job["size"])]
                found[job_id] = job
        return found

    @staticmethod
    def _task_state(record: Path, index: int) -> str:
        ended = record / f"{index}.exit"
        if ended.exists():
            code = int(ended.read_text() or 1)
            return "SUCCEEDED" if code == 0 else f"FAILED {code}"
        if _cancelled(record, index):
            return "CANCELLED"
        return "RUNNING" if (record / f"{index}.pid").exists() else "QUEUED"

    def cancel(self, job_id: str, index: int | None = None) -> None:
        """Cancel a job (``index`` None) or one of its tasks: marked, then SIGTERM to its process group."""
        record = self.home / job_id
        if not (record / "job.json").exists():
            return
        (record / ("cancelled" if index is None else f"{index}.cancelled")).touch()
        for pid_file in record.glob("*.pid" if index is None else f"{index}.pid"):
            with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
                os.killpg(int(pid_file.read_text()), signal.SIGTERM)

    def find(self, name: str) -> str | None:
        for job in self.home.glob("*/job.json"):
            if json.loads(job.read_text())["name"] == name:
                return job.parent.name
        return None


def _cancelled(record: Path, index: int) -> bool:
    return (record / "cancelled").exists() or (record / f"{index}.cancelled").exists()


def _run(record: Path, index: int, command: list[str]) -> int:
    """The runner: mark the task started, run it, record its exit code (a signal's number if killed)."""
    (record / f"{index}.pid").write_text(str(os.getpgrp()))  # its process group, which cancel signals
    code = subprocess.call(command)
    if not _cancelled(record, index):
        (record / f"{index}.exit").write_text(str(code if code >= 0 else 128 - code))
    return code


if __name__ == "__main__":
    sys.exit(_run(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]))
