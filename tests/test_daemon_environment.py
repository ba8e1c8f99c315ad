"""The daemons (the local fork server, the Docker dispatcher) reach a submission's folders with the
submitting process's credentials, never with those of the process that started them; what they
cannot reach they say to the jobs; their logs stay bounded.

Real: the daemons, moto's S3 (scripts/start-moto.sh), the Docker engine.  A daemon is started by a
separate process whose environment has no AWS_* variable, as a run without cloud credentials
leaves one behind.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

import jobsub
from jobsub.backends._daemon import daemon_log_handler
from tests import docker_env, tasks
from tests.test_storage_s3 import bucket as s3_bucket  # noqa: F401 - session fixtures of the store tests
from tests.test_storage_s3 import (
    moto,  # noqa: F401
    raw_client,
)

_START = """
import json, sys, jobsub
ex = jobsub.AutoExecutor(sys.argv[1], cluster=sys.argv[2])
ex.update_parameters(**json.loads(sys.argv[3]))
assert ex.submit(int, "7").result(timeout=60) == 7
"""


def _start_daemon_without_credentials(runtime: Path, folder: Path, cluster: str, **parameters: Any) -> str:
    """Run a job with a local folder from a process without cloud credentials; the pid of the daemon it left."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GOOGLE_"))}
    env["JOBSUB_LOCAL_DIR"] = str(runtime)
    subprocess.run(
        [sys.executable, "-c", _START, str(folder), cluster, json.dumps(parameters)], env=env, check=True, timeout=120
    )
    (pid_file,) = runtime.glob(f"{cluster}-*.sock.pid")
    return pid_file.read_text()


def _pid_of(runtime: Path, cluster: str) -> str:
    (pid_file,) = runtime.glob(f"{cluster}-*.sock.pid")
    return pid_file.read_text()


def test_local_server_started_without_credentials_serves_a_chain_that_has_them(
    private_local_server: Path, tmp_path: Path, s3_bucket: str  # noqa: F811
) -> None:
    """The server looks at a held task's upstream in the bucket itself: with the submitter's credentials."""
    pid = _start_daemon_without_credentials(private_local_server, tmp_path / "plain", "local")
    ex = jobsub.AutoExecutor(f"s3://{s3_bucket}/{uuid.uuid4().hex[:8]}/runs", cluster="local")
    first = ex.submit(tasks.sleep_then, 0.5, 1)
    second = ex.submit(tasks.add, first, 1)
    assert second.result(timeout=30) == 2
    assert _pid_of(private_local_server, "local") == pid  # the credential-less server did it


def test_docker_dispatcher_started_without_credentials_serves_a_chain_that_has_them(
    private_local_server: Path, tmp_path: Path, s3_bucket: str  # noqa: F811
) -> None:
    """The dispatcher records the tasks' starts and ends in the bucket: with the submitter's credentials."""
    docker_env.require()
    image = os.environ.get("JOBSUB_CLOUD_TEST_IMAGE")
    if not image:
        pytest.skip("JOBSUB_CLOUD_TEST_IMAGE is not set (scripts/build-cloud-test-image.sh builds it)")
    pid = _start_daemon_without_credentials(
        private_local_server, tmp_path / "plain", "docker", **docker_env.parameters()
    )
    ex = jobsub.AutoExecutor(f"s3://{s3_bucket}/{uuid.uuid4().hex[:8]}/runs", cluster="docker")
    ex.update_parameters(docker_image=image, docker_network_mode="host")
    first = ex.submit(tasks.add, 1, 1)
    second = ex.submit(tasks.add, first, 1)
    assert second.result(timeout=60) == 3
    assert first.state == second.state == "COMPLETED"
    assert _pid_of(private_local_server, "docker") == pid


def test_an_upstream_the_server_cannot_reach_fails_the_dependent_saying_so(
    private_local_server: Path, tmp_path: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """An upstream whose bucket is gone: the dependent ends FAILED naming it, not held forever."""
    monkeypatch.setenv("JOBSUB_UNREACHABLE_S", "1")  # the server this test starts gives up after 1 s
    client = raw_client()
    doomed = f"jobsub-doomed-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=doomed)
    upstream = jobsub.AutoExecutor(f"s3://{doomed}/runs", cluster="local").submit(tasks.sleep_then, 2, 1)
    dependent = jobsub.AutoExecutor(tmp_path / "runs", cluster="local").submit(tasks.add, upstream, 1)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=doomed):
        client.delete_objects(Bucket=doomed, Delete={"Objects": [{"Key": o["Key"]} for o in page.get("Contents", [])]})
    client.delete_bucket(Bucket=doomed)
    with pytest.raises(jobsub.JobError, match=rf"cannot look at the job it waits for, s3://{doomed}/runs/.*does not exist"):
        dependent.result(timeout=30)
    assert dependent.state == "FAILED"


def test_a_daemon_log_holds_repeats_back_and_rotates(tmp_path: Path) -> None:
    """A message repeated four times a second is written once a window; the file never grows past its limit."""
    log = logging.getLogger("jobsub.test-daemon-log")
    log.propagate = False
    handler = daemon_log_handler(str(tmp_path / "d.log"), max_bytes=20_000, repeat_window_s=3600)
    log.addHandler(handler)
    try:
        for _ in range(1000):
            log.warning("cannot look at the dependency %s: %s", "s3://b/x", "no usable AWS credentials")
        assert (tmp_path / "d.log").read_text().count("cannot look at the dependency") == 1
        for i in range(2000):
            log.warning("distinct message %d %s", i, "x" * 100)
    finally:
        log.removeHandler(handler)
        handler.close()
    sizes = [p.stat().st_size for p in tmp_path.glob("d.log*")]
    assert len(sizes) == 3 and max(sizes) <= 20_000


def test_a_container_that_cannot_reach_its_bucket_folder_says_so(tmp_path: Path, s3_bucket: str) -> None:  # noqa: F811
    """A task on a network without a route to the store: FAILED naming the endpoint and the network, its output kept.

    Real: the engine runs with ``--bridge=none`` here (scripts/start-docker.sh), so a container on
    the default network cannot reach moto on this machine's loopback, as on a machine whose
    default network has no route to the store.
    """
    docker_env.require()
    image = os.environ.get("JOBSUB_CLOUD_TEST_IMAGE")
    if not image:
        pytest.skip("JOBSUB_CLOUD_TEST_IMAGE is not set (scripts/build-cloud-test-image.sh builds it)")
    ex = jobsub.AutoExecutor(f"s3://{s3_bucket}/{uuid.uuid4().hex[:8]}/runs", cluster="docker")
    ex.update_parameters(docker_image=image, docker_network_mode="bridge")
    job = ex.submit(tasks.add, 1, 1)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ["AWS_ENDPOINT_URL"]
    with pytest.raises(jobsub.JobError, match=rf"could not reach its job folder: .*network 'bridge'.* at {endpoint}"):
        job.result(timeout=180)
    assert job.state == "FAILED"
    assert f"cannot reach its job folder {job.paths.folder}".replace("s3:/", "s3://") in (job.stderr() or "")
