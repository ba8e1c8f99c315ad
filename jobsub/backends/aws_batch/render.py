"""A ``Launch`` rendered as AWS Batch requests: the job definition and the SubmitJob call.

::

    job definition (registered once per shape, named by its content's hash):
        image, resources, roles, mounts, platform, and the command TEMPLATE
          python3 -c BOOTSTRAP Ref::jobsub_code_url Ref::jobsub_code_dir -- -m jobsub.worker
                  Ref::jobsub_folder --backend aws_batch ... --offset Ref::jobsub_offset
    SubmitJob (one per array, small): name (carries the submission tag), queue,
        definition, parameters {folder URL, offset, code URL}, environment,
        arrayProperties.size, timeout, retryStrategy, tags

The per-submission payload is the folder URL and an offset; the bootstrap's
source and everything else fixed lives in the definition, so resubmitting
costs nothing and the container overrides stay far under AWS's 8,192
characters (checked here before anything is sent: AWS would accept the job
and fail it at run time).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Mapping
from typing import Any

from ...cloud.container import code_dir, container_command
from ...errors import InvalidParameterError, SubmissionError
from ...parameters import CommonParameters
from ..base import Launch
from .params import AWSBatchParameters

__all__ = [
    "CANCEL_REASON",
    "task_launch",
    "MAX_ARRAY_SIZE",
    "MAX_OVERRIDES_CHARS",
    "check_overrides_size",
    "definition_request",
    "job_name",
    "submit_request",
]

logger = logging.getLogger("jobsub.aws_batch")

MAX_ARRAY_SIZE = 10_000
"""AWS Batch arrays hold 2 to 10,000 children; bigger submissions are split by the executor."""
MAX_OVERRIDES_CHARS = 8192
"""AWS's limit on a job's container overrides (the job FAILS at run time beyond it)."""
MIN_TIMEOUT_S = 60
"""AWS's minimum ``attemptDurationSeconds``."""
CANCEL_REASON = "jobsub: cancelled by the user"
"""The reason jobsub gives TerminateJob; the state mapping recognises it."""
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


def job_name(name: str, tag: str) -> str:
    """A valid Batch job name (``[A-Za-z0-9][A-Za-z0-9_-]{0,127}``) that ends in the submission tag.

    The tag is what ``find_submitted`` looks for (ListJobs' JOB_NAME filter),
    so it is kept whole and the user's name is shortened instead.
    """
    safe_tag = _NAME_CHARS.sub("-", tag).strip("-")
    prefix = _NAME_CHARS.sub("-", name).strip("-_")[: 127 - len(safe_tag)]
    full = f"{prefix}-{safe_tag}" if prefix else safe_tag
    return full if full[:1].isalnum() else f"j{full}"[:128]


def _resources(common: CommonParameters, with_defaults: bool) -> list[dict[str, str]]:
    """``resourceRequirements``: VCPU, MEMORY in MiB, GPU."""
    found: list[dict[str, str]] = []
    if common.cpus_per_task or with_defaults:
        found.append({"type": "VCPU", "value": str(common.cpus_per_task or 1)})
    if common.mem_gb or with_defaults:
        found.append({"type": "MEMORY", "value": str(math.ceil((common.mem_gb or 2.0) * 1024))})
    if common.gpus_per_node:
        found.append({"type": "GPU", "value": str(common.gpus_per_node)})
    return found


def _volumes(specs: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes, mounts = [], []
    for i, spec in enumerate(specs):
        host, sep, rest = spec.partition(":")
        container, _, mode = rest.partition(":")
        if not sep or not host or not container or mode not in ("", "ro", "rw"):
            raise InvalidParameterError(f"aws_batch volumes: {spec!r} is not 'HOST:CONTAINER[:ro]'")
        volumes.append({"name": f"v{i}", "host": {"sourcePath": host}})
        mounts.append({"sourceVolume": f"v{i}", "containerPath": container, "readOnly": mode == "ro"})
    return volumes, mounts


def task_launch(launch: Launch, *, array: bool) -> Launch:
    """The launch as a Batch task runs it.

    Its streams stay the container's, which AWS ships to CloudWatch as they
    come (live, and nothing re-uploaded to the folder); the tasks of an array
    name themselves ``<array>_<index>`` as jobsub does, from AWS's
    ``<array>:<index>``; SIGTERM is the preemption signal.
    """
    # a Spot reclamation reaches the container as SIGTERM (then SIGKILL after ECS's stop timeout):
    # a checkpointable callable checkpoints on it, and the attempt AWS retries resumes from there
    launch = launch.replace(logs="none", env={**launch.env, "JOBSUB_PREEMPT_SIGNAL": "TERM"})
    if array:
        launch = launch.replace(task_env={**launch.task_env, "array_job_id": "AWS_BATCH_JOB_ID"})
    return launch


def _definition_command(launch: Launch, spec: AWSBatchParameters) -> list[str]:
    """The task's argv in a definition: the per-submission values are ``Ref::`` parameters.

    No parameter name starts another one's: moto replaces ``Ref::name`` inside
    longer words too (``Ref::jobsub_code`` would eat ``Ref::jobsub_code_dir``).
    """
    code = "Ref::jobsub_code_url" if spec.package_code else None  # the core ships it (Launch.code_package)
    template = launch.replace(folder="Ref::jobsub_folder", code_package=code)
    return container_command(template, spec.python, unpack_dir="Ref::jobsub_code_dir", offset="Ref::jobsub_offset")


def definition_request(launch: Launch, common: CommonParameters, spec: AWSBatchParameters) -> dict[str, Any]:
    """RegisterJobDefinition's arguments; the name is a hash of everything else.

    Equal shapes (image, resources, roles, mounts, command template) give the
    same name, so a definition is registered once and reused by every
    submission of that shape, from any process.
    """
    properties: dict[str, Any] = {
        "image": spec.image,
        "command": _definition_command(launch, spec),
        "resourceRequirements": _resources(common, with_defaults=True),
        "environment": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
    }
    if spec.job_role_arn:
        properties["jobRoleArn"] = spec.job_role_arn
    if spec.execution_role_arn:
        properties["executionRoleArn"] = spec.execution_role_arn
    if spec.secrets:
        if not spec.execution_role_arn:
            raise InvalidParameterError("aws_batch_secrets are fetched by ECS with aws_batch_execution_role_arn: set it")
        properties["secrets"] = [{"name": k, "valueFrom": v} for k, v in sorted(spec.secrets.items())]
    if spec.volumes:
        if spec.platform == "FARGATE":
            raise InvalidParameterError("aws_batch volumes (host paths) exist on EC2 only, not on FARGATE")
        properties["volumes"], properties["mountPoints"] = _volumes(spec.volumes)
    if spec.platform == "FARGATE":
        if not spec.execution_role_arn:
            raise InvalidParameterError("Fargate jobs need aws_batch_execution_role_arn (to pull the image)")
        properties["networkConfiguration"] = {"assignPublicIp": "ENABLED" if spec.assign_public_ip else "DISABLED"}
    body: dict[str, Any] = {
        "type": "container",
        "containerProperties": properties,
        "platformCapabilities": [spec.platform],
        "parameters": {"jobsub_offset": "0"},  # the others are given by every SubmitJob
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]
    return {"jobDefinitionName": f"jobsub-{digest}", **body}


def _timeout_s(common: CommonParameters) -> int | None:
    if common.timeout_min is None:
        return None
    seconds = math.ceil(common.timeout_min * 60)
    if seconds < MIN_TIMEOUT_S:
        logger.warning(
            "timeout_min=%g is %d s: AWS Batch's shortest attempt duration is %d s, which is used",
            common.timeout_min, seconds, MIN_TIMEOUT_S,
        )
    return max(seconds, MIN_TIMEOUT_S)


def retry_strategy(spec: AWSBatchParameters) -> dict[str, Any]:
    """Retry Spot reclamations only: a task that failed on its own fails the same way again."""
    return {
        "attempts": spec.spot_retries + 1,
        "evaluateOnExit": [
            {"onStatusReason": "Host EC2*", "action": "RETRY"},
            {"onReason": "*", "action": "EXIT"},
        ],
    }


def submit_request(
    launch: Launch, n_tasks: int, common: CommonParameters, spec: AWSBatchParameters, definition: str,
) -> dict[str, Any]:
    """SubmitJob's arguments for ``n_tasks`` copies of the worker (an array from 2 tasks on).

    ``definition`` is the registered (or the user's own) definition; the
    code package, if any, is ``launch.code_package`` (``jobsub.cloud.container``).
    """
    environment = [{"name": k, "value": str(v)} for k, v in sorted(launch.env.items())]
    overrides: dict[str, Any] = {"environment": environment}
    request: dict[str, Any] = {
        "jobName": job_name(common.name, launch.tag),
        "jobQueue": spec.job_queue,
        "jobDefinition": definition,
        "containerOverrides": overrides,
        "retryStrategy": retry_strategy(spec),
    }
    if spec.job_definition:  # not ours: the command (and resources asked for) are overrides
        overrides["command"] = container_command(launch, spec.python, offset=str(launch.offset))
        resources = _resources(common, with_defaults=False)
        if resources:
            overrides["resourceRequirements"] = resources
    else:
        request["parameters"] = {"jobsub_folder": launch.folder, "jobsub_offset": str(launch.offset)}
        if launch.code_package is not None:
            request["parameters"].update(jobsub_code_url=launch.code_package, jobsub_code_dir=code_dir(launch.code_package))
    if n_tasks > 1:
        request["arrayProperties"] = {"size": n_tasks}
    timeout = _timeout_s(common)
    if timeout is not None:
        request["timeout"] = {"attemptDurationSeconds": timeout}
    if spec.tags:
        request["tags"] = dict(spec.tags)
        request["propagateTags"] = True
    if spec.share_identifier:
        request["shareIdentifier"] = spec.share_identifier
    if spec.scheduling_priority is not None:
        request["schedulingPriorityOverride"] = spec.scheduling_priority
    return request


def check_overrides_size(request: Mapping[str, Any]) -> None:
    """Refuse, before sending, a submission whose overrides AWS would fail at run time.

    Counted: the container overrides as JSON, plus the parameters substituted
    into the command (they override it as much).
    """
    overrides = json.dumps(request.get("containerOverrides", {}), separators=(",", ":"))
    parameters = sum(len(v) for v in request.get("parameters", {}).values())
    total = len(overrides) + parameters
    if total > MAX_OVERRIDES_CHARS:
        env = request.get("containerOverrides", {}).get("environment", [])
        biggest = sorted(env, key=lambda e: len(e["value"]), reverse=True)[:3]
        named = ", ".join(f"{e['name']} ({len(e['value'])} chars)" for e in biggest)
        raise SubmissionError(
            f"this AWS Batch submission's container overrides are {total} characters, over AWS's limit of "
            f"{MAX_OVERRIDES_CHARS} (AWS would accept the job and fail it when it starts). The largest "
            f"environment variables: {named or 'none'}. Pass large values as arguments of the function "
            "(they travel through the job folder), not through env."
        )
