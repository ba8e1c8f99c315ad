"""``aws_batch_debug=True``: run an AWS Batch submission's tasks on this machine's Docker engine.

::

    submit ─> the same image, the same command (the bootstrap that fetches the code package from
              the bucket), the same folder in the bucket, the AWS_BATCH_* variables a Batch job
              sees ─> jobsub.cloud.attached runs each task attached, one after the other, before
              ``submit`` returns, within ``timeout_min`` ─> its output and how it ended go to the folder

Nothing is sent to AWS Batch. The containers use this machine's AWS credentials (boto3's
chain, as the client does) and its network, so they reach the bucket as a Batch job would
with its role. Ids are ``here-<submission tag>``, found through the folder's id index: states,
logs and cancel read the folder.
"""

from __future__ import annotations

from typing import Any

from ...cloud.attached import AttachedRun, attached_id, run_tasks
from ...folder import JobFolder
from ...parameters import CommonParameters
from ..base import Launch

__all__ = ["run_here"]


def run_here(
    launch: Launch, argv: list[str], n_tasks: int, image: str, common: CommonParameters, folder: JobFolder
) -> str:
    """Run the ``n_tasks`` tasks of ``launch`` in containers of ``image``, attached; return their id."""
    backend_id = attached_id(launch)
    base = {**_credentials(), **launch.env, "AWS_BATCH_JOB_ATTEMPT": "1"}
    host_config: dict[str, Any] = {"network_mode": "host"}  # the bucket's endpoint as this machine sees it
    if common.mem_gb:
        host_config["mem_limit"] = int(common.mem_gb * 2**30)

    def env_of(index: int) -> tuple[dict[str, str], dict[str, str]]:
        child = index - launch.offset
        env = dict(base, AWS_BATCH_JOB_ID=f"{backend_id}:{child}" if n_tasks > 1 else backend_id)
        if n_tasks > 1:
            env["AWS_BATCH_JOB_ARRAY_INDEX"] = str(child)
        return env, {}

    timeout_s = None if common.timeout_min is None else common.timeout_min * 60
    run = AttachedRun(image, argv, host_config, timeout_s=timeout_s)
    run_tasks(run, folder, range(launch.offset, launch.offset + n_tasks), env_of)
    return backend_id


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
