"""Job folders in buckets: the behaviour suite with ``s3://`` and ``gs://`` folders, end to end.

The local backend's tasks (and Docker's, with an image that has the SDKs)
read and write their folder only through the store: call, arguments,
results, logs (uploaded while they run), records.  Against moto and
fake-gcs-server, started by scripts/start-moto.sh and scripts/start-fake-gcs.sh.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest

import jobsub
from tests import docker_env
from tests.conformance.behaviour import BehaviourSuite
from tests.conftest import wait_until
from tests.test_storage_gcs import bucket as gcs_bucket  # noqa: F401 - session fixtures of the store tests
from tests.test_storage_gcs import fake_gcs  # noqa: F401
from tests.test_storage_s3 import bucket as s3_bucket  # noqa: F401
from tests.test_storage_s3 import moto  # noqa: F401


class _OnABucket(BehaviourSuite):
    """A backend with its folder in a bucket; its task logs are uploaded every half second."""

    local_folder = False

    @pytest.fixture
    def service(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("JOBSUB_LOG_FLUSH_S", "0.5")


class TestLocalBackendOnS3(_OnABucket):
    cluster = "local"

    @pytest.fixture
    def folder_root(self, s3_bucket: str) -> str:  # noqa: F811
        return f"s3://{s3_bucket}/{uuid.uuid4().hex[:8]}/runs"


class TestLocalBackendOnGCS(_OnABucket):
    cluster = "local"

    @pytest.fixture
    def folder_root(self, gcs_bucket: str) -> str:  # noqa: F811
        return f"gs://{gcs_bucket}/{uuid.uuid4().hex[:8]}/runs"


class _DockerOnABucket(_OnABucket):
    """The Docker backend with a bucket folder: its tasks need the SDKs (the cloud test image)."""

    cluster = "docker"

    @pytest.fixture
    def service(self, monkeypatch: pytest.MonkeyPatch) -> None:
        docker_env.require()
        if not os.environ.get("JOBSUB_CLOUD_TEST_IMAGE"):
            pytest.skip("JOBSUB_CLOUD_TEST_IMAGE is not set (scripts/build-cloud-test-image.sh builds it)")
        monkeypatch.setenv("JOBSUB_LOG_FLUSH_S", "0.5")

    @pytest.fixture
    def backend_parameters(self) -> dict[str, Any]:
        return {
            "docker_image": os.environ["JOBSUB_CLOUD_TEST_IMAGE"], "docker_network_mode": "host",
            "env": {"JOBSUB_LOG_FLUSH_S": "0.5"},
        }


class TestDockerBackendOnS3(_DockerOnABucket):
    @pytest.fixture
    def folder_root(self, s3_bucket: str) -> str:  # noqa: F811
        return f"s3://{s3_bucket}/{uuid.uuid4().hex[:8]}/runs"


class TestDockerBackendOnGCS(_DockerOnABucket):
    @pytest.fixture
    def folder_root(self, gcs_bucket: str) -> str:  # noqa: F811
        return f"gs://{gcs_bucket}/{uuid.uuid4().hex[:8]}/runs"


def test_status_of_a_big_bucket_submission_reads_no_result(
    s3_bucket: str, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    """``jobsub status`` shows a bucket array's states without a request per result (10,000 tasks
    would take minutes); the peak memory it shows only for submissions small enough to read."""
    from jobsub.cli import STATUS_REMOTE_USAGE_MAX, main

    url = f"s3://{s3_bucket}/{uuid.uuid4().hex[:8]}/runs"
    ex = jobsub.AutoExecutor(url, cluster="local")
    n = STATUS_REMOTE_USAGE_MAX + 20
    jobs = ex.map_array(abs, range(-n, 0))
    assert [j.result(timeout=120) for j in jobs] == list(range(n, 0, -1))
    # a task whose end the server has not recorded yet is told from its result (a read, rightly):
    # the count below is about the recorded ones, so let the last records land (one listing a look)
    wait_until(lambda: len(jobs[0].folder.ended()) >= n, 30, "an exit record for every task")
    result_reads: list[str] = []

    def count(request: Any, **_: Any) -> None:
        if request.method == "GET" and "/result/" in request.url:
            result_reads.append(request.url)

    client = ex.storage.client  # type: ignore[attr-defined]  # the process's one S3 client
    client.meta.events.register("before-send.s3.GetObject", count)
    try:
        assert main(["status", url]) == 0
    finally:
        client.meta.events.unregister("before-send.s3.GetObject", count)
    assert f"{n} COMPLETED" in capsys.readouterr().out
    assert result_reads == []
