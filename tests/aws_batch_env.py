"""moto's AWS Batch for the tests: a compute environment, a job queue, a role and a bucket.

Shared by the AWS Batch suite class and the other tests of tests/test_aws_batch.py.
Needs ``eval "$(scripts/start-moto.sh)"`` after scripts/start-docker.sh (so
that moto runs each Batch job as a container on that engine) and
``JOBSUB_CLOUD_TEST_IMAGE`` (scripts/build-cloud-test-image.sh).
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from tests import docker_env
from tests.conftest import skip_if
from tests.emulators import endpoint_problem

QUEUE = "jobsub-test-queue"
BUCKET = "jobsub-aws-test"


def client(service: str) -> Any:
    import boto3

    return boto3.session.Session().client(service)


@functools.cache
def problem() -> str | None:
    """Why moto's Batch cannot run the tests here, or None (then the queue and bucket exist)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    found = endpoint_problem("AWS_ENDPOINT_URL", "start-moto.sh", "/", b"ListAllMyBucketsResult", endpoint)
    if found:
        return found
    engine = docker_env.cloud_image_problem()  # moto runs its Batch jobs on it
    if engine:
        return engine
    image = os.environ["JOBSUB_CLOUD_TEST_IMAGE"]
    _create_resources()
    state = _probe(image)
    if state != "SUCCEEDED":
        return f"moto cannot run Batch containers of {image} ({state}): start it with DOCKER_HOST set"
    return None


def require() -> None:
    skip_if(problem())


def _create_resources() -> None:
    iam, batch, s3 = client("iam"), client("batch"), client("s3")
    try:
        role = iam.create_role(RoleName="jobsub-test-batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    except iam.exceptions.EntityAlreadyExistsException:
        role = iam.get_role(RoleName="jobsub-test-batch")["Role"]["Arn"]
    if not batch.describe_job_queues(jobQueues=[QUEUE])["jobQueues"]:
        environment = batch.create_compute_environment(
            computeEnvironmentName="jobsub-test-ce", type="UNMANAGED", state="ENABLED", serviceRole=role,
        )["computeEnvironmentArn"]
        batch.create_job_queue(
            jobQueueName=QUEUE, state="ENABLED", priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
        )
    if BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=BUCKET)


def _probe(image: str) -> str:
    """A job that imports boto3 in the image: does moto run containers on the engine?"""
    batch = client("batch")
    batch.register_job_definition(
        jobDefinitionName="jobsub-test-probe", type="container",
        containerProperties={"image": image, "command": ["python3", "-c", "import boto3"], "vcpus": 1, "memory": 256},
    )
    probe = batch.submit_job(jobName="probe", jobQueue=QUEUE, jobDefinition="jobsub-test-probe")["jobId"]
    state = "SUBMITTED"
    for _ in range(120):
        state = batch.describe_jobs(jobs=[probe])["jobs"][0]["status"]
        if state in ("SUCCEEDED", "FAILED"):
            break
        time.sleep(0.5)
    return str(state)


def parameters() -> dict[str, Any]:
    """What an executor needs to run the test jobs on moto."""
    return {"aws_batch_job_queue": QUEUE, "aws_batch_image": os.environ["JOBSUB_CLOUD_TEST_IMAGE"]}
