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
    if not os.environ.get("JOBSUB_TEST_IMAGE"):
        return "JOBSUB_TEST_IMAGE is not set (scripts/build-test-image.sh builds it)"
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
