"""``aws_batch_debug=True``: run an AWS Batch submission's tasks on this machine's Docker engine.

::

    submit ─> the same image, the same command (the bootstrap that fetches the code package from
              the bucket), the same folder in the bucket, the AWS_BATCH_* variables a Batch job
              sees ─> each task runs attached, one after the other, before ``submit`` returns
              (``breakpoint()`` works in a terminal) ─> its output and how it ended go to the folder

Nothing is sent to AWS Batch. The containers use this machine's AWS credentials (boto3's
chain, as the client does) and its network, so they reach the bucket as a Batch job would
with its role. Ids are ``here-<submission tag>``: states, logs and cancel read the folder.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

from ...folder import JobFolder
from ...parameters import CommonParameters
from ...states import JobState, Status
from ...storage import Storage
from ..base import Launch

__all__ = ["ID_PREFIX", "is_here", "run_here", "states_here"]

logger = logging.getLogger("jobsub.aws_batch")

ID_PREFIX = "here-"


def is_here(backend_id: str) -> bool:
    """Whether ``backend_id`` names tasks run on this machine (``aws_batch_debug``)."""
    return backend_id.startswith(ID_PREFIX)


def run_here(
    launch: Launch, argv: list[str], n_tasks: int, image: str, common: CommonParameters, folder: JobFolder
) -> str:
    """Run the ``n_tasks`` tasks of ``launch`` in containers of ``image``, attached; return their id."""
    from .._supervisor import end_state
    from ..docker.engine import connect, end_of_containers, run_attached

    backend_id = f"{ID_PREFIX}{launch.tag}"
    api = connect(None)
    base = {**_credentials(), **launch.env, "AWS_BATCH_JOB_ATTEMPT": "1"}
    host_config: dict[str, Any] = {"network_mode": "host"}  # the bucket's endpoint as this machine sees it
    if common.mem_gb:
        host_config["mem_limit"] = int(common.mem_gb * 2**30)
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    for i in range(n_tasks):
        env = dict(base, AWS_BATCH_JOB_ID=f"{backend_id}:{i}" if n_tasks > 1 else backend_id)
        if n_tasks > 1:
            env["AWS_BATCH_JOB_ARRAY_INDEX"] = str(i)
        index = launch.offset + i
        logger.info("aws_batch_debug: task %d of %s runs here, in a container of %s", index, folder.url, image)
        state, out, err = run_attached(api, image, argv, environment=env, host_config=host_config, tty=tty)
        folder.write_task_log(index, 0, "out", out)
        folder.write_task_log(index, 0, "err", err)
        end = end_of_containers([state], host_config.get("mem_limit"))
        status, reason = end_state(end)
        folder.write_exit(index, status, reason, end.codes)
    return backend_id


def states_here(storage: Storage, backend_ids: Sequence[str]) -> dict[str, Status]:
    """The states of tasks run here: their exit records (every one is written before ``submit`` returns)."""
    answer: dict[str, Status] = {}
    for backend_id in backend_ids:
        tag, _, child = backend_id.removeprefix(ID_PREFIX).partition("_")
        key, _, offset = tag.rpartition("-")
        index = int(offset) + int(child or 0) if offset.isdigit() and (child or "0").isdigit() else -1
        record = JobFolder(storage, key).read_exit(index) if key and index >= 0 else None
        if record is None or "damaged" in record:
            answer[backend_id] = Status(JobState.LOST, f"no record of the local run {backend_id} in its folder")
        else:
            answer[backend_id] = Status(JobState(record["state"]), str(record.get("reason", "")))
    return answer


def _credentials() -> dict[str, str]:
    """This machine's AWS credentials, for containers run on this machine only (never a Batch job's)."""
    import boto3

    session = boto3.Session()
    found = session.get_credentials()
    env: dict[str, str] = {}
    if found is not None:
        frozen = found.get_frozen_credentials()
        env.update(AWS_ACCESS_KEY_ID=frozen.access_key, AWS_SECRET_ACCESS_KEY=frozen.secret_key)
        if frozen.token:
            env["AWS_SESSION_TOKEN"] = frozen.token
    if session.region_name:
        env.setdefault("AWS_DEFAULT_REGION", session.region_name)
    return env
