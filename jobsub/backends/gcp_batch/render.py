"""A ``Launch`` rendered as one GCP Batch CreateJob request (Batch v1's JSON, validated by ``Job.from_json``).

::

    job id     <name>-<submission tag>, Batch's pattern ^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$ (the tag
               kept whole: a retried submission asks for the same id and finds its job)
    job        taskGroups[0]: taskCount N, parallelism (array_parallelism), taskSpec:
                   runnables[0].container: image, the worker's command (the kit's container_command)
                   computeResource: cpuMilli, memoryMib;  maxRunDuration: timeout_min
                   maxRetryCount: spot_retries, lifecyclePolicies: RETRY_TASK on 50001 only
                   environment: the launch's (the folder store's endpoint, the user's env)
               allocationPolicy: machine type, SPOT/STANDARD, accelerators + drivers, boot disk,
                   service account, network, labels;  logsPolicy: CLOUD_LOGGING;  labels

A task's index is ``BATCH_TASK_INDEX`` (plus the launch's offset, on the worker's
command line); its streams go to Cloud Logging as they come.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ...cloud.container import container_command, scheduled_launch
from ...errors import InvalidParameterError
from ...parameters import CommonParameters
from ..base import Launch
from .params import GCPBatchParameters

__all__ = [
    "MAX_PARALLELISM",
    "backend_id",
    "job_name",
    "MAX_TASKS",
    "PREEMPTED",
    "JOB_VARIABLE",
    "job_id",
    "job_request",
    "named",
    "task_launch",
]

MAX_TASKS = 100_000
"""Tasks in one task group (Batch's limit); bigger arrays are split by the executor."""
MAX_PARALLELISM = 5_000
"""Tasks of one group running at once (Batch's limit)."""
PREEMPTED = 50001
"""Batch's exit code for a task whose Spot VM was preempted."""
_GPU_MACHINES = ("a2-", "a3-", "a4-", "a4x-", "g2-", "g4-")
"""Machine families that come with their GPUs (no accelerator to ask for)."""
_NOT_ID = re.compile(r"[^a-z0-9-]+")


def job_id(name: str, tag: str) -> str:
    """A valid Batch job id (at most 63 characters) that ends in the submission tag."""
    safe_tag = _NOT_ID.sub("-", tag.lower()).strip("-")
    room = 63 - len(safe_tag) - 1
    prefix = _NOT_ID.sub("-", name.lower()).strip("-")[:room].strip("-")
    full = f"{prefix}-{safe_tag}" if prefix else safe_tag
    if not full[:1].isalpha():
        full = f"j{full}"
    if len(full) > 63:  # a tag alone over 62 characters: keep its end, which is what differs
        full = "j" + full[-62:].lstrip("-")
    return full


def backend_id(name: str) -> str:
    """jobsub's id of the Batch job ``projects/P/locations/L/jobs/J``: ``P.L.J`` (ids hold no ``/``)."""
    _, project, _, location, _, job = name.split("/")
    return f"{project}.{location}.{job}"


def job_name(backend_id: str) -> str:
    """The Batch job name of jobsub's id ``P.L.J`` (a project may hold dots, a location or job id none).

    An id of another shape is taken for a name as it is.
    """
    parts = backend_id.rsplit(".", 2)
    if len(parts) != 3:
        return backend_id
    project, location, job = parts
    return f"projects/{project}/locations/{location}/jobs/{job}"


def task_launch(launch: Launch) -> Launch:
    """The launch as a Batch task runs it (the kit's ``scheduled_launch``: streams to Cloud Logging
    live, SIGTERM as the preemption notice), its index from ``BATCH_TASK_INDEX``, Python's
    output unbuffered (a line reaches Logging when printed, not when a buffer fills)."""
    scheduled = scheduled_launch(launch, index="BATCH_TASK_INDEX")
    return scheduled.replace(env={**scheduled.env, "PYTHONUNBUFFERED": "1"})


JOB_VARIABLE = "JOBSUB_GCP_BATCH_JOB"
"""The task's job name (Batch gives a task its index, not its job's name): jobsub's id of the task."""


def named(launch: Launch, name: str, *, array: bool) -> Launch:
    """The launch told its job's name, so that a task knows its jobsub id (``<name>_<index>`` in an array)."""
    role = "array_job_id" if array else "job_id"
    return launch.replace(env={**launch.env, JOB_VARIABLE: name}, task_env={**launch.task_env, role: JOB_VARIABLE})


def job_request(launch: Launch, n_tasks: int, common: CommonParameters, spec: GCPBatchParameters) -> dict[str, Any]:
    """The ``Job`` of a CreateJob request, as Batch's JSON (REST names)."""
    _check(common, spec, n_tasks)
    argv = container_command(launch, spec.python)
    task_spec: dict[str, Any] = {
        "runnables": [{"container": {"imageUri": spec.image, "entrypoint": argv[0], "commands": argv[1:]}}],
        "environment": {"variables": {k: str(v) for k, v in sorted(launch.env.items())}},
        "maxRetryCount": spec.spot_retries,
        # RETRY_TASK on a list: Batch retries those exit codes and FAILS every other one at once
        "lifecyclePolicies": [{"action": "RETRY_TASK", "actionCondition": {"exitCodes": [PREEMPTED]}}],
    }
    resources: dict[str, Any] = {}
    if common.cpus_per_task:
        resources["cpuMilli"] = str(common.cpus_per_task * 1000)
    if common.mem_gb:
        resources["memoryMib"] = str(math.ceil(common.mem_gb * 1024))
    if spec.boot_disk_gb:
        resources["bootDiskMib"] = str(spec.boot_disk_gb * 1024)
    if resources:
        task_spec["computeResource"] = resources
    if common.timeout_min is not None:
        task_spec["maxRunDuration"] = f"{max(1, math.ceil(common.timeout_min * 60))}s"
    group: dict[str, Any] = {"taskCount": str(n_tasks), "taskSpec": task_spec}
    parallelism = min(common.array_parallelism or n_tasks, n_tasks, MAX_PARALLELISM)
    if parallelism < n_tasks:
        group["parallelism"] = str(parallelism)
    labels = {"jobsub-tag": _NOT_ID.sub("-", launch.tag.lower())[:63], **spec.labels}
    return {
        "taskGroups": [group],
        "allocationPolicy": _allocation(common, spec, labels),
        "labels": labels,
        "logsPolicy": {"destination": "CLOUD_LOGGING"},
    }


def _allocation(common: CommonParameters, spec: GCPBatchParameters, labels: dict[str, str]) -> dict[str, Any]:
    policy: dict[str, Any] = {"provisioningModel": spec.provisioning_model}
    if spec.machine_type:
        policy["machineType"] = spec.machine_type
    if common.gpus_per_node and spec.accelerator:
        policy["accelerators"] = [{"type": spec.accelerator, "count": str(common.gpus_per_node)}]
    if spec.boot_disk_gb:
        policy["bootDisk"] = {"sizeGb": str(spec.boot_disk_gb)}
    instance: dict[str, Any] = {"policy": policy}
    if common.gpus_per_node:
        instance["installGpuDrivers"] = True
    allocation: dict[str, Any] = {"instances": [instance], "labels": dict(labels)}
    if spec.service_account:
        allocation["serviceAccount"] = {"email": spec.service_account}
    if spec.network or spec.subnetwork or spec.no_external_ip:
        interface: dict[str, Any] = {}
        if spec.network:
            interface["network"] = spec.network
        if spec.subnetwork:
            interface["subnetwork"] = spec.subnetwork
        if spec.no_external_ip:
            interface["noExternalIpAddress"] = True
        allocation["network"] = {"networkInterfaces": [interface]}
    return allocation


def _check(common: CommonParameters, spec: GCPBatchParameters, n_tasks: int) -> None:
    """What Batch would refuse (or run wrongly), said before anything is sent."""
    if not spec.image:
        raise InvalidParameterError("set the image of the tasks: gcp_batch_image='REGION-docker.pkg.dev/...'")
    if not 1 <= n_tasks <= MAX_TASKS:
        raise InvalidParameterError(f"{n_tasks} tasks: a GCP Batch task group holds 1 to {MAX_TASKS}")
    if common.gpus_per_node and not spec.accelerator and not (spec.machine_type or "").startswith(_GPU_MACHINES):
        raise InvalidParameterError(
            f"gpus_per_node={common.gpus_per_node} needs the GPU type: gcp_batch_accelerator='nvidia-tesla-t4' "
            f"(or a machine type with GPUs built in: {', '.join(m + '...' for m in _GPU_MACHINES)})"
        )
    if spec.accelerator and not common.gpus_per_node:
        raise InvalidParameterError(f"gcp_batch_accelerator={spec.accelerator!r} without gpus_per_node: how many?")
