"""The AWS Batch backend's own keys (``aws_batch_<key>`` with ``AutoExecutor``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...cloud.container import ContainerParameters

__all__ = ["AWSBatchParameters"]


@dataclass(kw_only=True)
class AWSBatchParameters(ContainerParameters):
    """Keys of the AWS Batch backend; the common keys (``timeout_min``, ``mem_gb``...) apply too.

    The container keys (``image``, ``python``, ``package_code``, ``code_*``, ``debug``) are
    ``ContainerParameters``'; the image needs boto3 too (the folder is in S3).  ``debug=True``
    runs the tasks on this machine's Docker engine with its AWS credentials: nothing is sent
    to AWS Batch.

    Common keys map to Batch as: ``cpus_per_task`` -> VCPU, ``mem_gb`` -> MEMORY
    (MiB), ``gpus_per_node`` -> GPU (``resourceRequirements``), ``timeout_min`` ->
    ``timeout.attemptDurationSeconds`` (AWS's minimum is 60 s: shorter limits are
    raised to it, with a warning), ``env`` -> the container's environment.
    """

    job_queue: str = ""
    """Name or ARN of the job queue (required)."""
    job_definition: str | None = None
    """Use this existing job definition (name, ``name:revision`` or ARN) instead of registering one;
    the command (and resources, when given) then travel as container overrides."""
    job_role_arn: str | None = None
    """The IAM role the task runs as: it must read and write the job folder's bucket."""
    execution_role_arn: str | None = None
    """The role ECS pulls images and writes logs with (required by Fargate)."""
    platform: str = "EC2"
    """``EC2`` or ``FARGATE``: the compute environments of ``job_queue`` decide which fits."""
    assign_public_ip: bool = False
    """Fargate only: a public IP for the task (needed to pull images and reach S3 without NAT)."""
    secrets: dict[str, str] = field(default_factory=dict)
    """Variable name -> ARN of a Secrets Manager secret or SSM parameter: ECS sets the variable in
    the task from it (needs ``execution_role_arn``).  The way to give a task a token: values
    passed any other way (``env``, ``pass_env``) show in DescribeJobs and the console."""
    tags: dict[str, str] = field(default_factory=dict)
    """Tags of the Batch job, propagated to its ECS tasks (``propagateTags``)."""
    share_identifier: str | None = None
    """Fair-share identifier (queues with a scheduling policy require one)."""
    scheduling_priority: int | None = field(default=None, metadata={"min": 0})
    """``schedulingPriorityOverride`` (fair-share queues; higher runs first)."""
    spot_retries: int = field(default=2, metadata={"min": 0})
    """Runs again after a Spot reclamation (status reason ``Host EC2*``); errors of the code itself
    are never retried."""
    runnable_timeout_min: float | None = field(default=60.0, metadata={"above": 0})
    """A job that stays RUNNABLE this long (no compute environment can run it: too many vCPUs,
    no capacity) is cancelled and reported with AWS's reason. None: wait forever."""
    volumes: list[str] = field(default_factory=list)
    """Host paths mounted in the task, ``"HOST:CONTAINER[:ro]"`` (EC2 only)."""

    def __post_init__(self) -> None:
        if self.platform.upper() not in ("EC2", "FARGATE"):
            raise ValueError(f"platform={self.platform!r}: AWS Batch platforms are 'EC2' and 'FARGATE'")
        self.platform = self.platform.upper()
        if self.spot_retries > 9:  # Batch allows 10 attempts in all
            raise ValueError(f"spot_retries={self.spot_retries}: AWS Batch allows at most 9 (10 attempts)")
        if self.scheduling_priority is not None and self.scheduling_priority > 9999:
            raise ValueError(f"scheduling_priority={self.scheduling_priority}: AWS Batch allows 0 to 9999")
