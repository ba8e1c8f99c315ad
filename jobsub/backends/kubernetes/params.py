"""The Kubernetes backend's own keys (``k8s_<key>`` with ``AutoExecutor``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...cloud.container import ContainerParameters

__all__ = ["KubernetesParameters"]


@dataclass(kw_only=True)
class KubernetesParameters(ContainerParameters):
    """Keys of the Kubernetes backend; the common and container keys (``image``...) apply too.

    Common keys map to the pod as: ``cpus_per_task`` -> CPU request, ``mem_gb``
    -> memory request and limit, ``gpus_per_node`` -> ``nvidia.com/gpu`` limit,
    ``timeout_min`` -> the pod's ``activeDeadlineSeconds`` (per task: a long
    array is never killed as a whole), ``array_parallelism`` -> the Job's
    ``parallelism``, ``env`` -> the container's environment, by value.
    """

    namespace: str | None = None
    """The namespace the Jobs are created in (it must exist); None: kubectl's choice, the namespace
    of the kubeconfig's context, else the pod's own when the client runs in one, else ``default``."""
    pvc: str | None = None
    """``claim`` or ``claim:/mount/path``: a PersistentVolumeClaim mounted in every pod at the
    path of the executor's folder (or at ``/mount/path``, which must contain it).  For folders on a
    path; ``s3://``/``gs://`` folders need none."""
    secrets: dict[str, str] = field(default_factory=dict)
    """Variable -> ``secret-name/key``: set in the task from a Secret of the namespace.  The way to
    give a task a token: only the reference is written into the Job and the folder."""
    node_selector: dict[str, str] = field(default_factory=dict)
    """Node labels a pod must match (``nodeSelector``), e.g. ``{"pool": "gpu"}``."""
    tolerations: list[dict[str, str]] = field(default_factory=list)
    """As the pod spec spells them (``{"key": ..., "operator": "Exists", "effect": "NoSchedule"}``)."""
    service_account: str | None = None
    """The pods' service account (its identity for a bucket folder, e.g. through workload identity)."""
    image_pull_secrets: list[str] = field(default_factory=list)
    """Secrets of the namespace the kubelet pulls a private image with."""
    labels: dict[str, str] = field(default_factory=dict)
    """Extra labels of the Job and its pods."""
    annotations: dict[str, str] = field(default_factory=dict)
    """Extra annotations of the Job and its pods."""
    retries: int = field(default=0, metadata={"min": 0})
    """Runs again after a failure of the pod (``backoffLimitPerIndex``: each task its own budget);
    a disruption (eviction, preemption, node drain) is retried without counting, up to
    three times (then PREEMPTED)."""
    ttl_after_finished_s: int | None = field(default=3600, metadata={"min": 0})
    """``ttlSecondsAfterFinished``: the cluster deletes a finished Job (its results stay in the folder)."""
    start_timeout_min: float = field(default=10.0, metadata={"above": 0})
    """A pod that cannot start this long (its image cannot be pulled, a Secret is missing) fails the
    task with the kubelet's message, and the Job is deleted."""

    def __post_init__(self) -> None:
        for variable, ref in self.secrets.items():
            if ref.count("/") != 1 or not all(ref.split("/")):
                raise ValueError(f"secrets[{variable!r}]={ref!r}: write it 'secret-name/key'")
