"""How a backend's one test class says it runs here: fixtures it overrides (fsspec's model).

::

    class TestMyBackend(BackendSuite):               # tests/conformance/behaviour.py
        cluster = "my"

        @pytest.fixture
        def service(self) -> None:                   # skip, naming what is missing
            my_env.require()

        @pytest.fixture
        def backend_parameters(self) -> dict[str, Any]:
            return {"my_queue": "test-queue"}

        @pytest.fixture
        def folder_root(self, tmp_path: Path) -> str:  # a bucket, for a backend without local folders
            return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"

Every suite (behaviour, guarantees, cache) builds its executors, and the
scripts of the tests that need another process, from these three only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

import jobsub
from jobsub.backends.base import Capabilities, load_backend_class


def needs(*capabilities: str) -> pytest.MarkDecorator:
    """Run the test only for backends that declare all these ``Capabilities`` (others deselect it)."""
    return pytest.mark.needs(*capabilities)


class BackendFixtures:
    """The fixtures every suite uses; a backend's class sets ``cluster`` and overrides what differs."""

    cluster: ClassVar[str] = ""

    @property
    def caps(self) -> Capabilities:
        return load_backend_class(self.cluster).capabilities

    @pytest.fixture
    def service(self) -> None:
        """Skips the test (naming the script that starts it) where the backend's service is missing."""

    @pytest.fixture
    def backend_parameters(self) -> dict[str, Any]:
        """What an executor needs to run the test jobs on this machine (also given to other processes)."""
        return {}

    @pytest.fixture
    def folder_root(self, tmp_path: Path) -> str:
        """The executor's folder: a path here, or a bucket URL for a backend whose tasks see no disk of ours."""
        return str(tmp_path / "runs")

    @pytest.fixture
    def executor(self, service: None, folder_root: str, backend_parameters: dict[str, Any]) -> jobsub.AutoExecutor:
        ex = jobsub.AutoExecutor(folder=folder_root, cluster=self.cluster)
        ex.update_parameters(**backend_parameters)
        return ex
