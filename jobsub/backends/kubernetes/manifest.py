"""The Indexed Job of one submission, as a manifest (pure: no client, no cluster).

::

    Job <name>                      name from the submission's tag: a retried create gets 409
      completionMode: Indexed       completions N, parallelism from array_parallelism
      backoffLimitPerIndex          each task its own retries; podFailurePolicy: a disruption
      podFailurePolicy              (DisruptionTarget) is retried without counting
      ttlSecondsAfterFinished
      template: restartPolicy Never, one container "jobsub" (the worker; sidecars may follow),
                activeDeadlineSeconds per pod from timeout_min, requests/limits, the claim mounted
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

from ...errors import InvalidParameterError
from ...parameters import CommonParameters
from .params import KubernetesParameters

__all__ = [
    "CONTAINER", "INDEX_KEY", "JOB_LABEL", "MAX_COMPLETIONS", "RETRIES_ANNOTATION", "ROOT_LABEL", "job_manifest",
    "job_name", "root_label",
]

CONTAINER = "jobsub"
"""The main container: the one whose end judges the task (sidecars are ignored)."""
INDEX_KEY = "batch.kubernetes.io/job-completion-index"
ROOT_LABEL = "jobsub.dev/root"
"""On Jobs and pods: which executor folder started them (one list call finds them all)."""
JOB_LABEL = "jobsub.dev/job"
RETRIES_ANNOTATION = "jobsub.dev/retries-per-index"
"""The task's retry budget, for clusters whose Job status has no ``failedIndexes``."""
FOLDER_ANNOTATION = "jobsub.dev/folder"
MAX_COMPLETIONS = 100_000
"""Indexed Jobs: completions (and parallelism) at most 10^5."""
_NAME_LENGTH = 19  # "jobsub-" + 12 hex: with "-<index up to 99999>-<5>" the pod name stays ≤ 63


def job_name(tag: str) -> str:
    """The Job's name, derived from the submission's tag: short, a DNS label, the same on a retry."""
    name = "jobsub-" + hashlib.sha256(tag.encode()).hexdigest()[: _NAME_LENGTH - 7]
    return name


def root_label(root: str) -> str:
    return hashlib.sha256(root.encode()).hexdigest()[:16]


def _quantity_mib(gb: float) -> str:
    return f"{math.ceil(gb * 1024)}Mi"


def _resources(common: CommonParameters) -> dict[str, dict[str, str]]:
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if common.cpus_per_task:
        requests["cpu"] = str(common.cpus_per_task)
    if common.mem_gb:
        requests["memory"] = limits["memory"] = _quantity_mib(common.mem_gb)
    if common.gpus_per_node:
        limits["nvidia.com/gpu"] = str(common.gpus_per_node)
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def _env(env: Mapping[str, str], secrets: Mapping[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    for variable, ref in sorted(secrets.items()):
        secret, key = ref.split("/")
        items.append({"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    return items


def _claim(spec: KubernetesParameters, folder_path: str | None) -> tuple[str, str] | None:
    """(claim, mount path) of ``k8s_pvc``, checked against the folder the tasks must see."""
    if not spec.pvc:
        return None
    claim, _, mount = spec.pvc.partition(":")
    if folder_path is None:
        raise InvalidParameterError(f"k8s_pvc={spec.pvc!r} is for folders on a path, not an object store")
    mount = mount or folder_path
    if not (folder_path + "/").startswith(mount.rstrip("/") + "/"):
        raise InvalidParameterError(
            f"k8s_pvc={spec.pvc!r}: the claim is mounted at {mount}, which does not contain the folder {folder_path}"
        )
    return claim, mount


def job_manifest(
    name: str,
    argv: list[str],
    n_tasks: int,
    common: CommonParameters,
    spec: KubernetesParameters,
    *,
    root: str,
    env: Mapping[str, str],
    folder_path: str | None,
) -> dict[str, Any]:
    """The batch/v1 Job that runs ``argv`` ``n_tasks`` times, task ``i`` with ``JOB_COMPLETION_INDEX=i``."""
    if not 1 <= n_tasks <= MAX_COMPLETIONS:
        raise InvalidParameterError(f"an Indexed Job holds 1 to {MAX_COMPLETIONS} tasks, not {n_tasks}")
    labels = {**spec.labels, ROOT_LABEL: root_label(root), JOB_LABEL: name}
    container: dict[str, Any] = {"name": CONTAINER, "image": spec.image, "command": argv}
    if env or spec.secrets:
        container["env"] = _env(env, spec.secrets)
    resources = _resources(common)
    if resources:
        container["resources"] = resources
    pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if common.timeout_min:
        pod["activeDeadlineSeconds"] = max(1, math.ceil(common.timeout_min * 60))
    claim = _claim(spec, folder_path)
    if claim:
        container["volumeMounts"] = [{"name": "jobsub-folder", "mountPath": claim[1]}]
        pod["volumes"] = [{"name": "jobsub-folder", "persistentVolumeClaim": {"claimName": claim[0]}}]
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [dict(t) for t in spec.tolerations]
    if spec.service_account:
        pod["serviceAccountName"] = spec.service_account
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s} for s in spec.image_pull_secrets]
    parallelism = min(common.array_parallelism or n_tasks, n_tasks)
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": n_tasks,
        "parallelism": parallelism,
        "backoffLimitPerIndex": spec.retries,
        "podFailurePolicy": {"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]},
        "template": {"metadata": {"labels": labels, **({"annotations": dict(spec.annotations)} if spec.annotations else {})},
                     "spec": pod},
    }
    if spec.ttl_after_finished_s is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_after_finished_s
    annotations = {**spec.annotations, RETRIES_ANNOTATION: str(spec.retries)}
    if folder_path is None:
        annotations[FOLDER_ANNOTATION] = root
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": spec.namespace, "labels": labels, "annotations": annotations},
        "spec": job_spec,
    }
