"""The GCP Batch backend's own keys (``gcp_batch_<key>`` with ``AutoExecutor``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ...cloud.container import ContainerParameters

__all__ = ["GCPBatchParameters"]

# Compute Engine names (RFC 1035 labels, at most 63 characters) of the shape Google gives machine
# and accelerator types: family-type[-size...] (n2-standard-4, e2-medium, a2-highgpu-1g,
# n2-custom-4-8192, nvidia-tesla-t4, nvidia-l4).  A shape, not a list: a type Google adds passes;
# Batch itself refuses a well-formed name that does not exist (CreateJob's 400 names it).
_MACHINE_TYPE = re.compile(r"^(?=.{1,63}$)[a-z][a-z0-9]*(-[a-z0-9]+)+$")
_ACCELERATOR = _MACHINE_TYPE
# a container image reference: [host[:port]/]path[:tag][@digest] (Docker's grammar, loosely)
_IMAGE = re.compile(
    r"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-fA-F]{32,})?$"
)
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
        if self.image and not _IMAGE.match(self.image):
            raise ValueError(
                f"image={self.image!r} is not a container image reference "
                "([HOST[:PORT]/]PATH[:TAG][@sha256:DIGEST], e.g. us-docker.pkg.dev/my-project/repo/img:1)"
            )
        if self.machine_type is not None and not _MACHINE_TYPE.match(self.machine_type):
            raise ValueError(
                f"machine_type={self.machine_type!r} is not a Compute Engine machine type name "
                f"(family-type[-size], lowercase: n2-standard-4, e2-medium, n2-custom-4-8192){_hint(self.machine_type)}"
            )
        if self.accelerator is not None and not _ACCELERATOR.match(self.accelerator):
            raise ValueError(
                f"accelerator={self.accelerator!r} is not a Compute Engine accelerator type "
                f"(nvidia-tesla-t4, nvidia-l4; `gcloud compute accelerator-types list`){_hint(self.accelerator)}"
            )
        for key, value in self.labels.items():
            if not _LABEL_KEY.match(key) or key.startswith(("goog-", "google-")) or not _LABEL_VALUE.match(str(value)):
                raise ValueError(
                    f"labels: {key!r}={value!r} breaks Google's label rule (keys start with a lowercase letter; "
                    "keys and values: lowercase letters, digits, '_' and '-', at most 63; no goog- prefix)"
                )


def _hint(value: str) -> str:
    """Compute Engine's spelling of a name given in another API's (``NVIDIA_TESLA_T4``: Vertex AI's)."""
    spelled = value.lower().replace("_", "-")
    return f": did you mean {spelled!r}?" if spelled != value and _MACHINE_TYPE.match(spelled) else ""
