"""The GCP Batch backend against the suite's Batch fake, with folders on fake-gcs-server.

Real: the google-cloud-batch and google-cloud-logging clients (REST), GCS (fake-gcs-server's
JSON API), every task a container of the cloud test image on the Docker engine, their exit
codes and output.  Played: Batch's control plane (tests/fakes/gcp_batch.py: scheduling,
``parallelism``, ``max_run_duration``, lifecycle retries, preemption on request, status events,
Logging's entries:list).  Faults (429, 503, lost answers) come from the FaultProxy in front of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import jobsub
from jobsub.backends.gcp_batch.render import job_name
from jobsub.errors import InvalidParameterError, JobCancelledError, PreemptedError
from jobsub.states import JobState
from tests import gcp_batch_env
from tests.conformance.behaviour import BackendSuite
from tests.conformance.fixtures import BucketCloudFixtures
from tests.conftest import skip_if, wait_until
from tests.emulators import FaultProxy
from tests.tasks import getenv, print_then_sleep

GOLDEN = Path(__file__).parent / "golden" / "gcp_batch_request.json"


@pytest.fixture(scope="session")
def gcp() -> Any:
    skip_if(gcp_batch_env.problem())
    return gcp_batch_env.fake()


@pytest.fixture
def root() -> str:
    return f"gs://{gcp_batch_env.BUCKET}/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def ex(gcp: Any, root: str, monkeypatch: pytest.MonkeyPatch) -> jobsub.AutoExecutor:
    monkeypatch.setenv("JOBSUB_POLL_INTERVAL", "0.5")
    executor = jobsub.AutoExecutor(folder=f"{root}/%j", cluster="gcp_batch")
    executor.update_parameters(**gcp_batch_env.parameters(), auto_array=False)
    return executor


class TestGCPBatchBehaviour(BucketCloudFixtures, BackendSuite):
    """The shared suites (behaviour, DAG, guarantees, cache) on the fake, folders on GCS."""

    cluster = "gcp_batch"
    probe = gcp_batch_env
    bucket = f"gs://{gcp_batch_env.BUCKET}"
    local_folder = False  # the folders are in a bucket
    live_logs = False  # the fake serves a task's output to Logging when its container ends


def test_an_array_of_5_runs_2_at_a_time_as_one_job(ex: jobsub.AutoExecutor, gcp: Any) -> None:
    ex.update_parameters(array_parallelism=2)
    created = len(gcp.created)
    jobs = ex.map_array(lambda x: (x * x, time.time(), (time.sleep(1.5), time.time())[1]), range(5))
    results = [job.result() for job in jobs]
    assert [r[0] for r in results] == [0, 1, 4, 9, 16]
    assert len(gcp.created) == created + 1  # one CreateJob for the array
    parent = jobs[0].job_id.rpartition("_")[0]
    assert [job.job_id for job in jobs] == [f"{parent}_{i}" for i in range(5)]
    job = gcp.job(job_name(parent))
    assert job.task_groups[0].task_count == 5 and job.task_groups[0].parallelism == 2
    spans = [(start, end) for _, start, end in results]
    most = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert most <= 2, f"{most} tasks ran at once with parallelism 2"


def test_a_preempted_task_is_retried_and_succeeds(ex: jobsub.AutoExecutor, gcp: Any) -> None:
    ex.update_parameters(gcp_batch_provisioning_model="SPOT", gcp_batch_spot_retries=2)
    job = ex.submit(getenv, "BATCH_TASK_RETRY_ATTEMPT")
    assert gcp.preempt(job_name(job.job_id), 0)  # its first attempt is reclaimed (exit code 50001)
    assert job.result() == "1"  # the second attempt (BATCH_TASK_RETRY_ATTEMPT counts from 0)
    wait_until(lambda: gcp.job(job_name(job.job_id)).status.state.name == "SUCCEEDED", timeout=30, what="the job SUCCEEDED")


def test_preempted_after_the_last_retry_is_a_preempted_error(ex: jobsub.AutoExecutor, gcp: Any) -> None:
    ex.update_parameters(gcp_batch_provisioning_model="SPOT", gcp_batch_spot_retries=0)
    job = ex.submit(getenv, "BATCH_TASK_RETRY_ATTEMPT")
    assert gcp.preempt(job_name(job.job_id), 0)
    with pytest.raises(PreemptedError, match="50001"):
        job.result()


def test_a_user_error_is_not_retried(ex: jobsub.AutoExecutor, gcp: Any) -> None:
    ex.update_parameters(gcp_batch_spot_retries=3)
    job = ex.submit(os._exit, 3)
    with pytest.raises(jobsub.errors.JobError, match="exit code 3"):
        job.result()
    described = gcp.job(job_name(job.job_id))
    assert described.status.state.name == "FAILED"
    assert described.status.task_groups["group0"].counts["FAILED"] == 1


def test_cancel_ends_the_job(ex: jobsub.AutoExecutor, gcp: Any) -> None:
    job = ex.submit(time.sleep, 120)
    wait_until(lambda: job.state is JobState.RUNNING, timeout=60, what="the task running")
    job.cancel()
    with pytest.raises(JobCancelledError):
        job.result(timeout=60)
    assert gcp.job(job_name(job.job_id)).status.state.name in ("CANCELLED", "CANCELLATION_IN_PROGRESS")


def test_cancelling_one_task_of_an_array_leaves_its_siblings_running(ex: jobsub.AutoExecutor, gcp: Any) -> None:
    """Batch cancels whole jobs only: task 2 of 3 (one at a time) cancelled while task 0 runs reads
    CANCELLED at once and never runs (its worker finds the cancel in the folder), tasks 0 and 1
    complete.  The fake runs each task as a real container, in Batch's order."""
    ex.update_parameters(array_parallelism=1)
    jobs = ex.map_array(print_then_sleep, [f"task {i} ran" for i in range(3)], [6, 1, 1])
    wait_until(lambda: jobs[0].state is JobState.RUNNING, timeout=60, what="task 0 running")
    assert jobs[2].cancel()
    assert jobs[2].state is JobState.CANCELLED
    assert [jobs[0].result(timeout=120), jobs[1].result(timeout=120)] == ["done", "done"]
    name = job_name(jobs[0].job_id.rpartition("_")[0])
    wait_until(lambda: gcp.job(name).status.state.name == "SUCCEEDED", timeout=60, what="the array ended")
    with pytest.raises(JobCancelledError):
        jobs[2].result(timeout=10)
    assert jobs[2].folder.read_result(2, 0) is None
    told = jobs[2].stderr() or ""
    assert "cancelled before it started" in told and "task 2 ran" not in told


def test_queued_past_its_limit_is_cancelled_with_batchs_reason(ex: jobsub.AutoExecutor, gcp: Any) -> None:
    from tests.fakes.gcp_batch import NO_CAPACITY

    ex.update_parameters(gcp_batch_queued_timeout_min=0.02, gcp_batch_machine_type=NO_CAPACITY)
    job = ex.submit(int, 1)
    with pytest.raises(JobCancelledError, match=r"QUEUED for over 0.02 min.*inadequate quotas"):
        job.result(timeout=60)
    wait_until(lambda: gcp.job(job_name(job.job_id)).status.state.name == "CANCELLED", timeout=10, what="CancelJob")


def test_reattach_from_another_process(ex: jobsub.AutoExecutor, gcp: Any) -> None:
    job = ex.submit(pow, 3, 4)
    code = (
        "import jobsub, sys; (j,) = jobsub.Job.attach(sys.argv[1]); "
        "print(j.result(timeout=120), j.job_id)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, job.folder.url],
        capture_output=True, text=True, timeout=180, check=True,
    )
    assert out.stdout.split() == ["81", job.job_id]


def test_a_429_storm_makes_no_duplicate_job(ex: jobsub.AutoExecutor, gcp: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """CreateJob answered 429 twice, then its answer lost after it went through: one job, adopted."""
    proxy = FaultProxy(gcp.url)
    try:
        monkeypatch.setenv("JOBSUB_GCP_BATCH_ENDPOINT", proxy.url)
        from jobsub.backends.gcp_batch import GCPBatchBackend

        backend = GCPBatchBackend(ex.storage.url)
        backend.api.first_delay_s = 0.01
        own = jobsub.Executor(ex.storage.url, backend=backend, **_specific(), auto_array=False)
        busy = {"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}
        proxy.fail("POST /v1/projects/", 429, busy, times=2)
        proxy.fail("POST /v1/projects/", 503, {"error": {"code": 503, "message": "lost", "status": "UNAVAILABLE"}},
                   after_forwarding=True)
        proxy.fail("GET /v1/projects/", 429, busy, times=3)  # GetJob: the client's own retry would not
        before = len(gcp.created)
        job = own.submit(pow, 2, 5)
        assert job.result(timeout=120) == 32
        assert len(gcp.created) == before + 1
        # 429, 429, the lost answer; then GetJob (through its own 429s) found the job: no fourth CreateJob
        assert proxy.count("POST /v1/projects/") == 3
        assert proxy.count("GET /v1/projects/") > 3
    finally:
        proxy.close()


def _specific() -> dict[str, Any]:
    return {k.removeprefix("gcp_batch_"): v for k, v in gcp_batch_env.parameters().items()}


def test_the_built_request_matches_the_golden_file() -> None:
    """GPU type and count, Spot, resources, time limit, labels, network: the request as sent."""
    from jobsub.backends.base import Launch
    from jobsub.backends.gcp_batch import render
    from jobsub.backends.gcp_batch.params import GCPBatchParameters
    from jobsub.parameters import CommonParameters

    common = CommonParameters(cpus_per_task=4, mem_gb=15, gpus_per_node=2, timeout_min=90, array_parallelism=10)
    spec = GCPBatchParameters(
        project="p", region="us-central1", image="us-docker.pkg.dev/p/r/img:1", machine_type="n1-standard-8",
        accelerator="nvidia-tesla-t4", provisioning_model="spot", spot_retries=4, service_account="sa@p.iam.gserviceaccount.com",
        network="global/networks/default", subnetwork="regions/us-central1/subnetworks/default", labels={"team": "ml"},
        boot_disk_gb=100,
    )
    launch = render.task_launch(Launch(
        folder="gs://b/runs/20260101-000000-abcdef12", backend="gcp_batch", offset=0, tag="20260101-000000-abcdef12-0",
        env={"STORAGE_EMULATOR_HOST": "http://127.0.0.1:4443"}, task_env={"index": "BATCH_TASK_INDEX"},
        code_package="gs://b/runs/.code/0123456789abcdef.tar.gz",
    ))
    name = f"projects/p/locations/us-central1/jobs/{render.job_id('', launch.tag)}"
    assert render.job_name(render.backend_id(name)) == name
    body = render.job_request(render.named(launch, render.backend_id(name), array=True), 1000, common, spec)
    if os.environ.get("JOBSUB_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    assert body == json.loads(GOLDEN.read_text())
    policy = body["allocationPolicy"]["instances"][0]["policy"]
    assert policy["accelerators"] == [{"type": "nvidia-tesla-t4", "count": "2"}]
    assert policy["provisioningModel"] == "SPOT"
    from google.cloud import batch_v1

    parsed = batch_v1.Job.from_json(json.dumps(body))  # Batch's own schema: no unknown field
    assert parsed.task_groups[0].task_spec.lifecycle_policies[0].action_condition.exit_codes == [50001]
    assert render.job_id("My Job_Name!", launch.tag) == "my-job-name-20260101-000000-abcdef12-0"
    assert len(render.job_id("x" * 80, launch.tag)) == 63


@pytest.mark.parametrize(
    ("parameters", "says"),
    [
        ({"gcp_batch_image": ""}, "gcp_batch_image"),
        ({"gcp_batch_region": ""}, "gcp_batch_region"),
        ({"gpus_per_node": 1}, "gcp_batch_accelerator"),
        ({"gcp_batch_machine_type": "big machine"}, "'big machine'"),
        ({"gcp_batch_machine_type": "N2-STANDARD-4"}, "'N2-STANDARD-4'.*did you mean 'n2-standard-4'"),
        ({"gcp_batch_machine_type": "zones/us-central1-a/machineTypes/n2-standard-4"}, "machine type name"),
        ({"gcp_batch_accelerator": "tesla"}, "'tesla'"),
        ({"gcp_batch_accelerator": "NVIDIA_TESLA_T4", "gpus_per_node": 1}, "did you mean 'nvidia-tesla-t4'"),
        ({"gcp_batch_accelerator": "nvidia-l4"}, "'nvidia-l4' without gpus_per_node"),
        ({"gcp_batch_image": "my image"}, "'my image' is not a container image reference"),
        ({"gcp_batch_image": "Ubuntu:22.04"}, "'Ubuntu:22.04'"),
        ({"gcp_batch_project": ""}, "gcp_batch_project"),
        ({"nodes": 2}, "one task per job"),
        ({"tasks_per_node": 4}, "one task per job"),
        ({"gcp_batch_labels": {"Team": "x"}}, "'Team'"),
        ({"gcp_batch_provisioning_model": "cheap"}, "'cheap'"),
    ],
)
def test_bad_input_is_refused_before_anything_is_sent(
    ex: jobsub.AutoExecutor, gcp: Any, parameters: dict[str, Any], says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"):  # no project from the environment
        monkeypatch.delenv(variable, raising=False)
    before = gcp.calls["CreateJob"]
    with pytest.raises(InvalidParameterError, match=says):
        ex.update_parameters(**parameters)
        ex.submit(int, 1)
    assert gcp.calls["CreateJob"] == before


@pytest.mark.parametrize("missing", ["gcp_batch_image", "gcp_batch_project", "gcp_batch_region"])
def test_a_missing_setting_is_refused_by_submit_with_automatic_arrays(
    gcp: Any, root: str, missing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the backend's default ``auto_array`` the submit that lacks a setting raises, naming it,
    rather than handing back a job whose ``result()`` says its coalesced array was never sent."""
    for variable in ("GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"):
        monkeypatch.delenv(variable, raising=False)
    executor = jobsub.AutoExecutor(folder=f"{root}/%j", cluster="gcp_batch")
    executor.update_parameters(**{**gcp_batch_env.parameters(), missing: ""})
    before = gcp.calls["CreateJob"]
    with pytest.raises(InvalidParameterError, match=missing):
        executor.submit(int, 1)
    with pytest.raises(InvalidParameterError, match=missing):
        executor.map_array(int, [1, 2])
    assert gcp.calls["CreateJob"] == before


def test_pass_env_is_refused_without_naming_a_parameter_the_backend_lacks() -> None:
    """GCP Batch has no ``gcp_batch_secrets``: the refusal of ``pass_env`` must not send the user to it
    (AWS Batch and Kubernetes, which have ``<name>_secrets``, name theirs)."""
    from jobsub.backends.base import check_env
    from jobsub.backends.gcp_batch.backend import GCPBatchBackend
    from jobsub.backends.kubernetes.backend import KubernetesBackend
    from jobsub.parameters import CommonParameters

    with pytest.raises(InvalidParameterError, match="pass_env") as refused:
        check_env(GCPBatchBackend("gs://bucket/runs"), CommonParameters(pass_env=["TOKEN"]))
    assert "_secrets" not in str(refused.value) and "secret manager" in str(refused.value)
    with pytest.raises(InvalidParameterError, match=r"kubernetes_secrets=\{"):
        check_env(KubernetesBackend("/tmp/runs"), CommonParameters(pass_env=["TOKEN"]))


def test_a_folder_in_another_store_is_refused_when_the_executor_is_made(tmp_path: Path) -> None:
    """Checked by ``Executor`` at creation (``check_folder``, the backend's ``folder_stores``), so no
    submit is coalesced for it; a local folder is told of gs:// only."""
    from jobsub.backends.base import check_folder
    from jobsub.backends.gcp_batch.backend import GCPBatchBackend

    backend = GCPBatchBackend("gs://bucket/runs")
    with pytest.raises(InvalidParameterError, match=r"cannot read job folders in s3://bucket/runs: .* gs://bucket/prefix/%j$"):
        check_folder(backend, "s3://bucket/runs", local=False)
    with pytest.raises(InvalidParameterError, match=r"disk: give the executor an object-store folder \(gs://bucket/prefix/%j\)$"):
        check_folder(backend, str(tmp_path), local=True)
    check_folder(backend, "gs://bucket/runs", local=False)


def test_real_names_of_types_and_images_pass_the_checks() -> None:
    """The checks are of shape, not a list: Google's names, custom and newer types, any registry pass."""
    from jobsub.backends.gcp_batch.params import GCPBatchParameters

    for machine in ("n2-standard-4", "e2-medium", "a2-highgpu-1g", "n2-custom-4-8192", "n2-custom-4-8192-ext",
                    "e2-custom-small-1024", "f1-micro", "c3-standard-4-lssd", "a3-megagpu-8g", "ct5lp-hightpu-4t"):
        assert GCPBatchParameters(machine_type=machine).machine_type == machine
    for accelerator in ("nvidia-tesla-t4", "nvidia-l4", "nvidia-a100-80gb", "nvidia-h100-mega-80gb", "nvidia-tesla-t4-vws"):
        assert GCPBatchParameters(accelerator=accelerator).accelerator == accelerator
    for image in ("python:3.11", "us-docker.pkg.dev/p/r/img:1", "localhost:5000/team/img", "gcr.io/example.com/p/img",
                  f"gcr.io/p/img@sha256:{'a' * 64}", os.environ.get("JOBSUB_CLOUD_TEST_IMAGE") or "ubuntu"):
        assert GCPBatchParameters(image=image).image == image


def test_a_local_folder_is_refused(gcp: Any, tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="gcp_batch"):
        ex = jobsub.AutoExecutor(folder=tmp_path, cluster="gcp_batch")
        ex.update_parameters(**gcp_batch_env.parameters())
        ex.submit(int, 1)


def test_a_missing_bucket_is_named_before_anything_is_sent(gcp: Any) -> None:
    bucket = f"jobsub-no-such-bucket-{uuid.uuid4().hex[:8]}"
    before = gcp.calls["CreateJob"]
    with pytest.raises(jobsub.errors.BackendError, match=f"bucket '{bucket}' does not exist"):
        ex = jobsub.AutoExecutor(folder=f"gs://{bucket}/runs/%j", cluster="gcp_batch")  # refused here
        ex.update_parameters(**gcp_batch_env.parameters())
        ex.submit(int, 1)
    assert gcp.calls["CreateJob"] == before


DOMAIN_PROJECT = "example.com:my-project"
"""A domain-scoped project: its id holds a '.' and a ':'."""


def test_ids_of_a_domain_scoped_project_round_trip() -> None:
    from jobsub.backends.gcp_batch import render
    from jobsub.cloud.arrays import split_id

    name = f"projects/{DOMAIN_PROJECT}/locations/us-central1/jobs/{render.job_id('fit', '20260101-000000-abcdef12-0')}"
    ours = render.backend_id(name)
    assert ours == f"{DOMAIN_PROJECT}.us-central1.fit-20260101-000000-abcdef12-0"
    assert render.job_name(ours) == name
    assert split_id(f"{ours}_7") == (ours, 7) and split_id(ours) == (ours, None)
    assert render.job_name(split_id(f"{ours}_7")[0]) == name


def test_a_domain_scoped_project_runs_an_array(ex: jobsub.AutoExecutor, gcp: Any) -> None:
    """Its ids go through the folder's index, the fake's REST paths and the task's own job id."""
    from tests.tasks import describe_environment

    ex.update_parameters(gcp_batch_project=DOMAIN_PROJECT)
    jobs = ex.map_array(lambda _: describe_environment(), range(2))
    seen = [job.result() for job in jobs]
    parent = jobs[0].job_id.rpartition("_")[0]
    assert parent.startswith(f"{DOMAIN_PROJECT}.{gcp_batch_env.REGION}.")
    assert gcp.job(job_name(parent)) is not None
    assert [s["job_id"] for s in seen] == [job.job_id for job in jobs]  # the task knows its own id
    again = jobsub.Job(ex.storage.url, jobs[1].job_id)  # found through the folder's id index
    assert again.result() == seen[1]


def test_a_debug_run_reads_the_submitters_google_credentials_file(
    ex: jobsub.AutoExecutor, gcp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """debug=True: a container of the same image on this machine's engine (real), folder on
    fake-gcs-server (real), nothing sent to the Batch fake.  The task finds the submitter's
    Application Default Credentials file (a dummy here) where GOOGLE_APPLICATION_CREDENTIALS
    says, with the project and the store's endpoint; the folder holds none of its secret."""
    from jobsub.backends.gcp_batch.here import ADC_IN_CONTAINER

    secret = f"refresh-{uuid.uuid4().hex}"
    adc = tmp_path / "application_default_credentials.json"
    adc.write_text(json.dumps({
        "type": "authorized_user", "client_id": "jobsub-test.apps.googleusercontent.com",
        "client_secret": secret, "refresh_token": secret,
    }))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))

    def seen() -> dict[str, Any]:
        import json as json_in_task
        import os as os_in_task

        path = os_in_task.environ.get("GOOGLE_APPLICATION_CREDENTIALS", "")
        with open(path) as f:
            client_id = json_in_task.load(f)["client_id"]  # read, not returned: the secret stays in the file
        names = ("GOOGLE_CLOUD_PROJECT", "STORAGE_EMULATOR_HOST")
        return {"path": path, "client_id": client_id, **{n: os_in_task.environ.get(n) for n in names}}

    ex.update_parameters(gcp_batch_debug=True)
    created = gcp.calls["CreateJob"]
    job = ex.submit(seen)
    assert job.job_id.startswith("here-")
    assert job.result(timeout=120) == {
        "path": ADC_IN_CONTAINER, "client_id": "jobsub-test.apps.googleusercontent.com",
        "GOOGLE_CLOUD_PROJECT": gcp_batch_env.PROJECT, "STORAGE_EMULATOR_HOST": os.environ["STORAGE_EMULATOR_HOST"],
    }
    assert gcp.calls["CreateJob"] == created
    from google.cloud import storage

    bucket, _, prefix = job.folder.url.removeprefix("gs://").partition("/")
    blobs = list(storage.Client().list_blobs(bucket, prefix=prefix.rpartition("/")[0]))
    assert blobs, "the folder is in the bucket"
    for blob in blobs:
        assert secret.encode() not in blob.download_as_bytes(), blob.name


def test_the_credentials_file_is_the_one_google_auth_would_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobsub.backends.gcp_batch.here import adc_file

    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    assert adc_file() is None  # gcloud never logged in for applications here
    gcloud = tmp_path / "application_default_credentials.json"
    gcloud.write_text("{}")
    assert adc_file() == str(gcloud)
    named = tmp_path / "key.json"
    named.write_text("{}")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(named))
    assert adc_file() == str(named)  # the variable first, as google-auth reads it
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "gone.json"))
    assert adc_file() is None


def test_logs_come_from_cloud_logging(ex: jobsub.AutoExecutor, gcp: Any) -> None:
    job = ex.submit(print, "hello from the task")
    job.result()
    assert "hello from the task" in (job.stdout() or "")
    assert gcp.calls["ListLogEntries"] >= 1
