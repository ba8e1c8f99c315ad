"""GCP Batch for the tests: the suite's own Batch fake (tests/fakes/gcp_batch.py) and a bucket on fake-gcs-server.

What is real: the ``google-cloud-batch`` and ``google-cloud-logging`` clients over REST, GCS
(fake-gcs-server, its real JSON API), each task a container of ``JOBSUB_CLOUD_TEST_IMAGE`` on
the Docker engine.  What is played: Batch's control plane (no emulator of it exists).  The
fake runs in the test process, on a loopback port; ``JOBSUB_GCP_BATCH_ENDPOINT`` and
``JOBSUB_GCP_LOGGING_ENDPOINT`` point the clients (and the tests' other processes) at it.
Needs ``eval "$(scripts/start-fake-gcs.sh)"`` and scripts/start-docker.sh + build-cloud-test-image.sh.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from tests import docker_env
from tests.emulators import endpoint_problem

PROJECT = "jobsub-test"
REGION = "us-central1"
BUCKET = "jobsub-gcp-test"


@functools.cache
def fake() -> Any:
    """The process's Batch fake, started on first use; the clients' endpoints point at it."""
    from tests.fakes.gcp_batch import FakeBatch

    server = FakeBatch()
    os.environ["JOBSUB_GCP_BATCH_ENDPOINT"] = server.url
    os.environ["JOBSUB_GCP_LOGGING_ENDPOINT"] = server.url
    return server


@functools.cache
def problem() -> str | None:
    """Why the GCP Batch tests cannot run here, or None (then the fake runs and the bucket exists)."""
    endpoint = os.environ.get("STORAGE_EMULATOR_HOST")
    found = endpoint_problem("STORAGE_EMULATOR_HOST", "start-fake-gcs.sh", "/storage/v1/b", b"storage#buckets", endpoint)
    if found:
        return found
    engine = docker_env.cloud_image_problem()  # the fake runs each task on it
    if engine:
        return engine
    try:
        from google.cloud import batch_v1, logging  # noqa: F401
    except ImportError as exc:
        return f"no Google clients for the GCP Batch fake (pip install -e '.[test]'): {exc}"
    from google.cloud import storage

    client = storage.Client()
    if client.lookup_bucket(BUCKET) is None:
        client.create_bucket(BUCKET)
    fake()
    return None


def parameters() -> dict[str, Any]:
    """What an executor needs to run the test jobs on the fake."""
    return {
        "gcp_batch_project": PROJECT, "gcp_batch_region": REGION, "gcp_batch_image": os.environ["JOBSUB_CLOUD_TEST_IMAGE"],
    }
