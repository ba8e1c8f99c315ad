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

import uuid
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pytest

import jobsub
from jobsub.backends.base import Capabilities, load_backend_class
from tests.conftest import skip_if


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


class ServiceProbe(Protocol):
    """The shape of a ``tests/<backend>_env.py`` module: what is missing here, and what an executor needs."""

    def problem(self) -> str | None: ...

    def parameters(self) -> dict[str, Any]: ...


class BucketCloudFixtures(BackendFixtures):
    """The fixtures of a cloud backend's suite class, from its probe module (``tests/<backend>_env.py``).

    ``probe.problem()`` skips (naming what is missing), ``probe.parameters()`` configures the
    executor, and the folders are under a fresh prefix of ``bucket`` (``s3://...``, ``gs://...``);
    without a bucket, on a local path (a shared volume the pods mount).
    """

    probe: ClassVar[ServiceProbe]
    bucket: ClassVar[str] = ""
    poll_interval_s: ClassVar[float | None] = 0.5
    """``JOBSUB_POLL_INTERVAL`` for the test and the processes it starts (None: the default)."""

    @pytest.fixture
    def service(self, monkeypatch: pytest.MonkeyPatch) -> None:
        skip_if(self.probe.problem())
        if self.poll_interval_s is not None:
            monkeypatch.setenv("JOBSUB_POLL_INTERVAL", str(self.poll_interval_s))  # inherited by other processes

    @pytest.fixture
    def backend_parameters(self) -> dict[str, Any]:
        return self.probe.parameters()

    @pytest.fixture
    def folder_root(self, tmp_path: Path) -> str:
        return f"{self.bucket}/{uuid.uuid4().hex[:12]}" if self.bucket else str(tmp_path / "runs")
