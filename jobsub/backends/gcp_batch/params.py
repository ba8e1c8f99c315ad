"""The GCP Batch backend's own keys (``gcp_batch_<key>`` with ``AutoExecutor``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ...cloud.container import ContainerParameters

__all__ = ["GCPBatchParameters"]

_MACHINE_TYPE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)+$")
_ACCELERATOR = re.compile(r"^nvidia-[a-z0-9-]+$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
MODELS = ("STANDARD", "SPOT")


@dataclass(kw_only=True)
class GCPBatchParameters(ContainerParameters):
    """Keys of the GCP Batch backend; the common keys (``timeout_min``, ``mem_gb``...) apply too.

    Common keys map to Batch as: ``cpus_per_task`` -> ``computeResource.cpuMilli`` (x 1000),
    ``mem_gb`` -> ``computeResource.memoryMib``, ``timeout_min`` -> ``maxRunDuration``,
    ``gpus_per_node`` -> the count of ``accelerator`` (``instances[].policy.accelerators``),
    ``array_parallelism`` -> the task group's ``parallelism``, ``env`` -> the runnable's environment.
    """

    project: str = ""
    """The Google Cloud project (default: GOOGLE_CLOUD_PROJECT, then CLOUDSDK_CORE_PROJECT)."""
    region: str = ""
    """Where the jobs run (``us-central1``); ``location`` is the same key under Batch's own name."""
    location: str = ""
    """The same as ``region``, under Batch's own name (give one of the two)."""
    machine_type: str | None = None
    """A Compute Engine machine type (``e2-standard-4``, ``a2-highgpu-1g``); default: Batch picks one."""
    accelerator: str | None = None
    """GPU type (``nvidia-tesla-t4``, ``nvidia-l4``...) for ``gpus_per_node`` GPUs a task; drivers installed."""
    provisioning_model: str = "STANDARD"
    """``STANDARD`` or ``SPOT`` (preemptible, cheaper; preemptions are retried: ``spot_retries``)."""
    spot_retries: int = field(default=3, metadata={"min": 0})
    """Runs again after a preemption (Batch's exit code 50001); errors of the code itself are never retried."""
    service_account: str | None = None
    """Email of the service account the VMs (and tasks) run as: it must read and write the folder's bucket."""
    network: str | None = None
    """VPC network (``projects/P/global/networks/N`` or ``global/networks/N``)."""
    subnetwork: str | None = None
    """Subnetwork (``projects/P/regions/R/subnetworks/S``)."""
    no_external_ip: bool = False
    """VMs without external IP (the subnetwork then needs Private Google Access to reach GCS)."""
    labels: dict[str, str] = field(default_factory=dict)
    """Labels of the job (and its VMs and log entries): lowercase keys and values, at most 63 characters."""
    boot_disk_gb: int | None = field(default=None, metadata={"min": 10})
    """Size of each VM's boot disk (room for a large image)."""
    queued_timeout_min: float | None = field(default=60.0, metadata={"above": 0})
    """A job still QUEUED after this long (quota, no capacity, an image that cannot be pulled) is
    cancelled and reported with Batch's status events. None: wait forever."""

    def __post_init__(self) -> None:
        model = self.provisioning_model.upper()
        if model not in MODELS:
            raise ValueError(f"provisioning_model={self.provisioning_model!r}: GCP Batch's are {' and '.join(MODELS)}")
        self.provisioning_model = model
        if self.region and self.location and self.region != self.location:
            raise ValueError(f"region={self.region!r} and location={self.location!r} differ: give one")
        if self.spot_retries > 10:  # max_retry_count's range is [0, 10]
            raise ValueError(f"spot_retries={self.spot_retries}: GCP Batch retries a task at most 10 times")
        if self.machine_type is not None and not _MACHINE_TYPE.match(self.machine_type):
            raise ValueError(f"machine_type={self.machine_type!r} is not a Compute Engine machine type (e2-standard-4)")
        if self.accelerator is not None and not _ACCELERATOR.match(self.accelerator):
            raise ValueError(f"accelerator={self.accelerator!r} is not a GPU type of Compute Engine (nvidia-tesla-t4)")
        for key, value in self.labels.items():
            if not _LABEL_KEY.match(key) or key.startswith(("goog-", "google-")) or not _LABEL_VALUE.match(str(value)):
                raise ValueError(
                    f"labels: {key!r}={value!r} breaks Google's label rule (keys start with a lowercase letter; "
                    "keys and values: lowercase letters, digits, '_' and '-', at most 63; no goog- prefix)"
                )
