"""The Docker engine of scripts/start-docker.sh and the test image, as the tests find them.

Shared by the Docker suite class (tests/test_docker.py) and the tests that
need Docker beside another backend.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from tests.conftest import skip_if


@functools.cache
def problem() -> str | None:
    """Why Docker cannot be tested here, or None if it can."""
    return engine_problem("JOBSUB_TEST_IMAGE", "build-test-image.sh")


@functools.cache
def cloud_image_problem() -> str | None:
    """Why the cloud test image (the test image plus the SDKs) cannot run here, or None: what the
    stand-ins of AWS Batch, GCP Batch and the Kubernetes kubelet run their tasks in."""
    return engine_problem("JOBSUB_CLOUD_TEST_IMAGE", "build-cloud-test-image.sh")


def engine_problem(image_variable: str, build_script: str) -> str | None:
    """Why containers of the image ``image_variable`` names cannot run on the engine, or None."""
    if not os.environ.get(image_variable):
        return f"{image_variable} is not set (scripts/{build_script} builds it)"
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:
        return f"no Docker engine reachable (scripts/start-docker.sh): {exc}"
    return None


def require() -> None:
    skip_if(problem())


def parameters() -> dict[str, Any]:
    """The test image, and the host network (tests may only talk to loopback)."""
    return {"docker_image": os.environ["JOBSUB_TEST_IMAGE"], "docker_network_mode": "host"}
