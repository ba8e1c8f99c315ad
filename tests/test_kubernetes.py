"""The Kubernetes backend against a REAL API server, with the Job controller and kubelet played.

Real: kube-apiserver 1.20 and etcd (scripts/start-kube.sh; validation, 409/422/404, label
selectors, status subresources, graceful deletion), kube-controller-manager's garbage
collector (a deleted Job's pods go), the pods' containers on the Docker engine, the job
folders (a claim bound to the host's /tmp).  Played (tests/fakes/kube_controller.py): the
Indexed Job controller and the kubelet, which 1.20 lacks or which cannot run here.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest

import jobsub
from tests import kube_env, tasks
from tests.conformance.behaviour import BackendSuite
from tests.conformance.fixtures import BucketCloudFixtures
from tests.conftest import wait_until

pytestmark = pytest.mark.kube


class TestKubernetesBehaviour(BucketCloudFixtures, BackendSuite):
    """The shared suites (behaviour, DAG, guarantees, cache), none skipped while the services run;
    folders under /tmp, which the claim holds at the same path in every pod."""

    cluster = "kubernetes"
    probe = kube_env
    poll_interval_s = None


@pytest.fixture
def ex(tmp_path: Any) -> jobsub.AutoExecutor:
    kube_env.require()
    executor = jobsub.AutoExecutor(folder=tmp_path / "runs", cluster="kubernetes")
    executor.update_parameters(**kube_env.parameters())
    return executor


def _read_elsewhere(ex: jobsub.AutoExecutor, job_id: str) -> str:
    """What a second Python process (nothing shared with this one's backend) reads of ``job_id``
    once its Job is gone: its exception's class and message."""
    code = (
        "import jobsub\n"
        f"error = jobsub.Job({str(ex.folder)!r}, {job_id!r}).exception(timeout=90)\n"
        "print(type(error).__name__, error)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _jobs(name_part: str = "") -> list[Any]:
    found = kube_env.cluster().batch().list_namespaced_job(kube_env.cluster().namespace).items
    return [j for j in found if name_part in j.metadata.name]


def test_array_of_five_with_parallelism_two(ex: jobsub.AutoExecutor) -> None:
    """One Job of completions 5, parallelism 2: never more than 2 pods at once, every index once."""
    ex.update_parameters(array_parallelism=2)
    counts = ex.backend.api.counts  # type: ignore[attr-defined]  # this test's own backend (its own root)
    jobs = ex.map_array(tasks.add, [1, 2, 3, 4, 5], [10, 20, 30, 40, 50])
    assert counts["create_namespaced_job"] == 1
    name = jobs[0].job_id.partition(".")[2].partition("_")[0]
    job = kube_env.cluster().batch().read_namespaced_job(name, kube_env.cluster().namespace)
    assert (job.spec.completions, job.spec.parallelism) == (5, 2)
    peak = 0
    while not all(j.done() for j in jobs):
        pods = kube_env.cluster().core().list_namespaced_pod(
            kube_env.cluster().namespace, label_selector=f"jobsub.dev/job={name}").items
        peak = max(peak, sum(p.status.phase in ("Pending", "Running") for p in pods))
    assert peak <= 2
    assert [j.result(timeout=60) for j in jobs] == [11, 22, 33, 44, 55]


def test_no_namespace_given_uses_the_kubeconfig_contexts(ex: jobsub.AutoExecutor) -> None:
    """As kubectl: without ``k8s_namespace`` the Jobs go to the namespace of the kubeconfig's context
    (the tests' kubeconfig names the test namespace), not to ``default``."""
    ex.update_parameters(k8s_namespace=None)
    job = ex.submit(tasks.add, 2, 3)
    assert job.job_id.startswith(f"{kube_env.cluster().namespace}.")
    assert job.result(timeout=120) == 5
    assert _jobs(job.job_id.partition(".")[2])


def test_image_that_cannot_be_pulled_fails_naming_it(ex: jobsub.AutoExecutor) -> None:
    """ErrImagePull/ImagePullBackOff past k8s_start_timeout_min: an error naming the image, Job
    deleted; the end is recorded in the folder first, so a second process reads the same failure
    (not JobLostError) once the Job is gone."""
    ex.update_parameters(k8s_image="registry.invalid/none:1", k8s_start_timeout_min=0.05)
    job = ex.submit(tasks.add, 1, 2)
    with pytest.raises(jobsub.UncompletedJobError, match=r"registry.invalid/none:1.*(ErrImagePull|ImagePullBackOff)") as here:
        job.result(timeout=120)
    name = job.job_id.partition(".")[2]
    wait_until(lambda: not _jobs(name), 30, "the Job deleted")
    elsewhere = _read_elsewhere(ex, job.job_id)
    assert elsewhere.startswith(f"{type(here.value).__name__} ") and "state FAILED (image 'registry.invalid/none:1'" in elsewhere


def test_cluster_without_indexed_jobs_is_refused(ex: jobsub.AutoExecutor) -> None:
    """A Job controller that makes pods without a completion index: a clear error at once, no hang;
    the Job deleted, its end recorded first (a second process reads it too, not JobLostError)."""
    controller = kube_env.cluster().controller
    controller.indexed = False
    try:
        job = ex.submit(tasks.sleep_then, 20, 1)
        with pytest.raises(jobsub.UncompletedJobError, match="does not run Indexed Jobs") as here:
            job.result(timeout=60)
    finally:
        controller.indexed = True
    wait_until(lambda: not _jobs(job.job_id.partition(".")[2]), 30, "the Job deleted")
    elsewhere = _read_elsewhere(ex, job.job_id)
    assert elsewhere.startswith(f"{type(here.value).__name__} ") and "does not run Indexed Jobs" in elsewhere


def test_lost_create_answer_adopts_the_job(ex: jobsub.AutoExecutor) -> None:
    """The create went through but its answer was lost (a 503 after forwarding): the retry gets 409,
    the Job is adopted, and exactly one Job exists."""
    proxy = kube_env.cluster().proxy
    proxy.fail("POST /apis/batch/v1/namespaces", 503, {"kind": "Status", "code": 503, "message": "lost"},
               after_forwarding=True)
    job = ex.submit(tasks.add, 2, 3)
    assert job.result(timeout=120) == 5
    assert len(_jobs(job.job_id.partition(".")[2])) == 1


def test_throttling_storm_is_ridden_out(ex: jobsub.AutoExecutor) -> None:
    """429s with Retry-After on the create and on the polls: retried, paced, one Job, the right result."""
    proxy = kube_env.cluster().proxy
    throttled = {"kind": "Status", "code": 429, "message": "too many requests"}
    proxy.fail("POST /apis/batch/v1/namespaces", 429, throttled, times=2, headers={"Retry-After": "1"})
    proxy.fail("GET /api/v1/namespaces", 429, throttled, times=3, headers={"Retry-After": "1"})
    job = ex.submit(tasks.add, 4, 5)
    assert ex.backend.api.counts["create_namespaced_job"] == 3  # type: ignore[attr-defined]  # 429, 429, created
    assert job.result(timeout=120) == 9
    assert len(_jobs(job.job_id.partition(".")[2])) == 1


def _running_pod(name: str) -> str | None:
    """The name of a Running pod of Job ``name`` (the played kubelet started its container), or None."""
    cluster = kube_env.cluster()
    pods = cluster.core().list_namespaced_pod(cluster.namespace, label_selector=f"jobsub.dev/job={name}").items
    return next((p.metadata.name for p in pods if p.status.phase == "Running"), None)


def test_evicted_pod_is_retried(ex: jobsub.AutoExecutor) -> None:
    """An eviction (DisruptionTarget) does not spend the task's retries (0 here): it runs again."""
    job = ex.submit(tasks.sleep_then, 5, 2)
    cluster = kube_env.cluster()
    name = job.job_id.partition(".")[2]
    wait_until(lambda: _running_pod(name), 60, "a running pod")
    first = _running_pod(name)
    assert first
    cluster.controller.evict(first)
    assert job.result(timeout=120) == 2
    pods = cluster.core().list_namespaced_pod(cluster.namespace, label_selector=f"jobsub.dev/job={name}").items
    assert len(pods) == 2  # the evicted one and its retry (which wrote the result)
    evicted = next(p for p in pods if p.metadata.name == first)
    assert (evicted.status.phase, evicted.status.reason) == ("Failed", "Evicted")


def test_evicted_more_often_than_retried_is_preempted(ex: jobsub.AutoExecutor) -> None:
    """Disruptions within the limit (three) run the task again without spending its retries (0
    here); one more reads PREEMPTED with the kubelet's reason, and the Job, whose controller would
    replace the pod for ever (podFailurePolicy Ignore), is deleted, the end recorded in the folder
    first: a second process reads PreemptedError too, not JobLostError.  Real: the API server, its
    status subresources and garbage collector.  Played: the kubelet's eviction (``evict``: the
    container killed, the pod Failed/Evicted with a DisruptionTarget condition) and the Job
    controller's replacement pods."""
    from jobsub.backends.kubernetes.status import DISRUPTION_RETRIES

    job = ex.submit(tasks.sleep_then, 60, 1)
    cluster = kube_env.cluster()
    name = job.job_id.partition(".")[2]
    evicted: list[str] = []
    for _ in range(DISRUPTION_RETRIES + 1):
        wait_until(lambda: _running_pod(name) not in (None, *evicted), 60, "a (replacement) pod running")
        evicted.append(_running_pod(name) or "")
        if len(evicted) <= DISRUPTION_RETRIES:  # within the limit: not final, its retries (0) unspent
            assert not job.status(force=True).state.is_final
        cluster.controller.evict(evicted[-1])
    with pytest.raises(jobsub.PreemptedError, match=rf"Evicted.*disrupted {DISRUPTION_RETRIES + 1} times"):
        job.result(timeout=120)
    assert job.state == "PREEMPTED"
    wait_until(lambda: not _jobs(name), 30, "the Job deleted")
    # recorded in the folder before the delete: a second process reads it, not JobLostError
    elsewhere = _read_elsewhere(ex, job.job_id)
    assert elsewhere.startswith("PreemptedError") and f"disrupted {DISRUPTION_RETRIES + 1} times" in elsewhere, elsewhere


def test_logs_of_a_finished_task_while_its_array_runs(ex: jobsub.AutoExecutor) -> None:
    """stdout() of a task that ended while the other task of its Job still runs: its own pod's end is
    asked (one pod list), not the Job's, which would wait out the log policy's grace on the sibling."""
    jobs = ex.map_array(tasks.print_then_sleep, ["first-done", "still-running"], [0, 120])
    assert jobs[0].result(timeout=120) == "done"
    cluster = kube_env.cluster()
    name = jobs[0].job_id.partition(".")[2].partition("_")[0]

    def first_pod_succeeded() -> bool:  # the result is written before the played kubelet sees the exit
        pods = cluster.core().list_namespaced_pod(cluster.namespace, label_selector=f"jobsub.dev/job={name}").items
        return any(p.status.phase == "Succeeded" for p in pods)

    wait_until(first_pod_succeeded, 30, "the first task's pod Succeeded")
    counts = ex.backend.api.counts  # type: ignore[attr-defined]  # this test's own backend (its own root)
    before = dict(counts)
    assert "first-done" in (jobs[0].stdout() or "")
    calls = {k: v - before.get(k, 0) for k, v in counts.items() if v != before.get(k, 0)}
    assert calls == {"list_namespaced_pod": 1, "read_namespaced_pod_log": 1}
    assert not jobs[1].done()
    jobs[1].cancel()


def test_missing_namespace_is_a_clear_error(ex: jobsub.AutoExecutor) -> None:
    """The real server's 404 for the namespace becomes an error naming it; nothing is left behind."""
    ex.update_parameters(k8s_namespace="no-such-namespace")
    with pytest.raises(jobsub.SubmissionError, match="namespace 'no-such-namespace' does not exist"):
        ex.submit(tasks.add, 1, 2)


def test_manifest_refused_by_the_server_shows_its_message(ex: jobsub.AutoExecutor) -> None:
    """A 422 from the real server (an invalid label value) is shown with its field path."""
    ex.update_parameters(k8s_labels={"team": "not a valid value!"})
    with pytest.raises(jobsub.SubmissionError, match=r"refused the manifest: .*labels"):
        ex.submit(tasks.add, 1, 2)


def test_secret_by_reference_reaches_the_task_and_never_the_folder(ex: jobsub.AutoExecutor) -> None:
    """k8s_secrets: the pod gets the value from the Secret; only the reference is in the Job and folder."""
    cluster = kube_env.cluster()
    value = "s3cr3t-" + cluster.namespace
    cluster.core().create_namespaced_secret(cluster.namespace, {
        "metadata": {"name": "api-token"}, "stringData": {"value": value},
    })
    ex.update_parameters(k8s_secrets={"API_TOKEN": "api-token/value"})
    job = ex.submit(tasks.getenv, "API_TOKEN")
    assert job.result(timeout=120) == value
    for path in ex.folder.rglob("*"):  # type: ignore[union-attr]
        if path.is_file() and path.suffix != ".pkl":
            assert value.encode() not in path.read_bytes(), path


def test_unschedulable_pod_shows_the_schedulers_reason(ex: jobsub.AutoExecutor) -> None:
    """A pod no node can take stays PENDING with the scheduler's words in the job's state reason."""
    ex.update_parameters(cpus_per_task=64)
    job = ex.submit(tasks.add, 1, 2)
    backend = ex.backend
    wait_until(lambda: "Insufficient cpu" in backend.states([job.job_id])[job.job_id].reason, 60, "the reason")
    assert backend.states([job.job_id])[job.job_id].state == jobsub.JobState.PENDING
    job.cancel()


def test_state_of_many_jobs_is_one_job_list_and_one_pod_page(ex: jobsub.AutoExecutor) -> None:
    """A poll of several tracked Jobs: 1 Job list + 1 page of unfinished pods, whatever their number."""
    jobs = [ex.submit(tasks.add, i, i) for i in range(3)]
    backend = ex.backend
    before = dict(backend.api.counts)
    backend.states([j.job_id for j in jobs])
    calls = {k: v - before.get(k, 0) for k, v in backend.api.counts.items() if v != before.get(k, 0)}
    assert calls == {"list_namespaced_job": 1, "list_namespaced_pod": 1}
    assert [j.result(timeout=120) for j in jobs] == [0, 2, 4]


def test_bucket_folder_with_credentials_from_a_secret(tmp_path: Any) -> None:
    """A folder in a bucket (moto's S3): the code package is uploaded beside it (pods do not see
    this machine's disk), and the pods read both with credentials a Secret gives them."""
    kube_env.require()
    from tests.emulators import endpoint_problem

    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    problem = endpoint_problem("AWS_ENDPOINT_URL", "start-moto.sh", "/", b"ListAllMyBucketsResult", endpoint)
    if problem:
        pytest.skip(problem)
    import boto3

    s3 = boto3.session.Session().client("s3")
    bucket = "jobsub-k8s-test"
    if bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=bucket)
    cluster = kube_env.cluster()
    with contextlib.suppress(Exception):
        cluster.core().create_namespaced_secret(cluster.namespace, {
            "metadata": {"name": "aws"}, "stringData": {"id": "testing", "key": "testing"},
        })
    ex = jobsub.AutoExecutor(folder=f"s3://{bucket}/{uuid.uuid4().hex[:12]}", cluster="kubernetes")
    parameters = {k: v for k, v in kube_env.parameters().items() if k != "k8s_pvc"}
    ex.update_parameters(**parameters, k8s_secrets={"AWS_ACCESS_KEY_ID": "aws/id", "AWS_SECRET_ACCESS_KEY": "aws/key"})
    jobs = ex.map_array(tasks.add, [1, 2], [3, 4])
    assert [j.result(timeout=120) for j in jobs] == [4, 6]


def test_gcs_bucket_folder(tmp_path: Any) -> None:
    """A folder in a gs:// bucket (fake-gcs-server, its real JSON API): the code package is uploaded
    beside it, the pods (host network) read and write the bucket through STORAGE_EMULATOR_HOST,
    which the store hands to the tasks, and the results come back through it."""
    kube_env.require()
    from tests.emulators import endpoint_problem

    endpoint = os.environ.get("STORAGE_EMULATOR_HOST")
    problem = endpoint_problem("STORAGE_EMULATOR_HOST", "start-fake-gcs.sh", "/storage/v1/b", b"storage#buckets", endpoint)
    if problem:
        pytest.skip(problem)
    from google.cloud import storage

    client = storage.Client()
    bucket = "jobsub-k8s-test"
    if client.lookup_bucket(bucket) is None:
        client.create_bucket(bucket)
    prefix = uuid.uuid4().hex[:12]
    ex = jobsub.AutoExecutor(folder=f"gs://{bucket}/{prefix}", cluster="kubernetes")
    ex.update_parameters(**{k: v for k, v in kube_env.parameters().items() if k != "k8s_pvc"})
    jobs = ex.map_array(tasks.add, [1, 2], [30, 40])
    name = jobs[0].job_id.partition(".")[2].partition("_")[0]
    job = _jobs(name)[0]
    assert not job.spec.template.spec.volumes  # no claim: the bucket is the only way to the folder
    assert [j.result(timeout=120) for j in jobs] == [31, 42]
    names = [b.name for b in client.list_blobs(bucket, prefix=f"{prefix}/")]
    assert any("/.code/" in n for n in names), names  # the code package, uploaded beside the folders


def test_debug_runs_attached_on_this_machines_engine(ex: jobsub.AutoExecutor) -> None:
    """k8s_debug=True: the same image, command and folder, run attached here; no Job is created."""
    from jobsub.backends.kubernetes.manifest import job_name

    ex.update_parameters(k8s_debug=True)
    jobs = ex.map_array(tasks.add, [1, 2], [10, 20])
    assert jobs[0].job_id.startswith("here-")
    assert [j.result(timeout=60) for j in jobs] == [11, 22]
    # the Job the submission would have made (named from its tag) does not exist
    assert not _jobs(job_name(jobs[0].job_id.partition("_")[0].removeprefix("here-")))


def test_job_deleted_behind_our_back_is_lost_or_judged_by_the_folder(
    ex: jobsub.AutoExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Job deleted by another client (or its TTL): the task with a result is COMPLETED, the one
    without is LOST with the reason; never a hang."""
    from jobsub.backends.kubernetes import backend as kube_backend

    monkeypatch.setattr(kube_backend, "FORGOTTEN_GRACE_S", 0.0)
    done = ex.submit(tasks.add, 1, 1)
    assert done.result(timeout=120) == 2
    slow = ex.submit(tasks.sleep_then, 120, 1)
    wait_until(lambda: slow.state == "RUNNING", 60, "the task running")
    cluster = kube_env.cluster()
    for job in (done, slow):
        cluster.batch().delete_namespaced_job(job.job_id.partition(".")[2], cluster.namespace,
                                              propagation_policy="Background")
    with pytest.raises(jobsub.JobLostError, match="no longer lists job"):
        slow.result(timeout=60)
    assert ex.backend.states([done.job_id])[done.job_id].state == jobsub.JobState.COMPLETED


def test_cancelling_one_task_of_an_array_leaves_its_siblings_running(ex: jobsub.AutoExecutor) -> None:
    """Task 2 of 3 (one at a time) cancelled while task 0 runs: CANCELLED at once, its pod's worker
    finds the cancel in the folder and does not run it, and the Job is not deleted: tasks 0 and 1
    complete (1.20 cannot end one index of an Indexed Job alone)."""
    ex.update_parameters(array_parallelism=1)
    jobs = ex.map_array(tasks.print_then_sleep, [f"task {i} ran" for i in range(3)], [6, 1, 1])
    wait_until(lambda: jobs[0].state == "RUNNING", 60, "task 0 running")
    assert jobs[2].cancel()
    assert jobs[2].state == jobsub.JobState.CANCELLED
    assert [jobs[0].result(timeout=120), jobs[1].result(timeout=120)] == ["done", "done"]
    name = jobs[0].job_id.partition(".")[2].partition("_")[0]
    cluster = kube_env.cluster()

    def complete() -> bool:
        job = cluster.batch().read_namespaced_job(name, cluster.namespace)
        return any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or [])

    wait_until(complete, 60, "the Job complete: every index ran, task 2's without running its function")
    with pytest.raises(jobsub.JobCancelledError):
        jobs[2].result(timeout=10)
    assert jobs[2].folder.read_result(2, 0) is None
    told = (jobs[2].stdout() or "") + (jobs[2].stderr() or "")
    assert "cancelled before it started" in told and "task 2 ran" not in told


def test_jobs_cancelled_from_another_process_read_cancelled(ex: jobsub.AutoExecutor) -> None:
    """`jobsub cancel` in another process deletes the Jobs (a plain job, an array by its own id):
    this process reads CANCELLED from the folder's record, not LOST."""
    import subprocess
    import sys

    plain = ex.submit(tasks.sleep_then, 120, 1)
    array = ex.map_array(tasks.sleep_then, [120, 120], [1, 2])
    wait_until(lambda: plain.state == "RUNNING", 60, "the task running")
    array_id = array[0].job_id.rpartition("_")[0]
    out = subprocess.run(
        [sys.executable, "-m", "jobsub", "cancel", str(ex.folder), plain.job_id, array_id],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    for job in (plain, *array):
        with pytest.raises(jobsub.JobCancelledError, match="cancelled by the user"):
            job.result(timeout=60)
    assert not _jobs(plain.job_id.partition(".")[2]) and not _jobs(array_id.partition(".")[2])
