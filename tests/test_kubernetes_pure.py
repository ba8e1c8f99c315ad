"""The Kubernetes backend's manifests, without a cluster: golden file and the current schemas.

The test API server (1.20) silently drops the Indexed-only fields (``completionMode``,
``backoffLimitPerIndex``, ``podFailurePolicy``), so every manifest shape the backend builds
is checked here against the newest schemas kubernetes-validate ships, strictly (unknown
fields are errors).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobsub import JobState
from jobsub.backends.kubernetes.manifest import (
    CONTAINER,
    INDEX_KEY,
    RETRIES_ANNOTATION,
    job_manifest,
    job_name,
)
from jobsub.backends.kubernetes.params import KubernetesParameters
from jobsub.backends.kubernetes.status import DISRUPTION_RETRIES, task_status
from jobsub.cloud.kube import KubeGateway
from jobsub.errors import BackendError, InvalidParameterError, SubmissionError
from jobsub.parameters import CommonParameters

kubernetes_validate = pytest.importorskip("kubernetes_validate")
GOLDEN = Path(__file__).parent / "golden" / "kubernetes_job.json"


def _full() -> dict[str, Any]:
    common = CommonParameters(timeout_min=1.5, mem_gb=2, cpus_per_task=2, gpus_per_node=1, array_parallelism=2)
    spec = KubernetesParameters(
        namespace="team", image="registry.example/py:3.11", pvc="shared:/mnt/shared",
        secrets={"TOKEN": "api-token/value"}, node_selector={"pool": "gpu"},
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        service_account="runner", image_pull_secrets=["regcred"], labels={"team": "ml"},
        annotations={"owner": "ml"}, retries=2,
    )
    return job_manifest(
        job_name("20260101-000000-abcdef01-0"), ["python3", "-m", "jobsub.worker", "/mnt/shared/runs/x"], 5,
        common, spec, root="/mnt/shared/runs", env={"MODE": "test"}, folder_path="/mnt/shared/runs/x",
    )


def _minimal() -> dict[str, Any]:
    return job_manifest(
        job_name("t"), ["python3"], 1, CommonParameters(), KubernetesParameters(image="py"),
        root="s3://bucket/runs", env={}, folder_path=None,
    )


@pytest.mark.parametrize("build", [_full, _minimal])
def test_manifests_are_valid_for_current_kubernetes(build: Any) -> None:
    version = kubernetes_validate.utils.latest_version()
    kubernetes_validate.validate(build(), version, strict=True)


def test_golden_manifest() -> None:
    """The whole Job of a full parameter set; delete the golden file to regenerate it if intended."""
    rendered = json.dumps(_full(), indent=2, sort_keys=True) + "\n"
    if not GOLDEN.exists():
        GOLDEN.write_text(rendered)
    assert rendered == GOLDEN.read_text()


def test_indexed_per_index_retries_and_disruptions_ignored() -> None:
    spec = _full()["spec"]
    assert spec["completionMode"] == "Indexed"
    assert (spec["completions"], spec["parallelism"], spec["backoffLimitPerIndex"]) == (5, 2, 2)
    assert spec["podFailurePolicy"]["rules"][0]["action"] == "Ignore"
    pod = spec["template"]["spec"]
    assert pod["activeDeadlineSeconds"] == 90 and pod["restartPolicy"] == "Never"


def test_secrets_are_references_never_values() -> None:
    env = _full()["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api-token", "key": "value"}}} in env


def test_pod_names_stay_dns_labels() -> None:
    """``<job>-<index>-<5>`` for the largest index fits in 63 characters."""
    assert len(f"{job_name('x' * 500)}-99999-abcde") <= 63


def test_claim_must_contain_the_folder() -> None:
    with pytest.raises(InvalidParameterError, match="does not contain the folder"):
        job_manifest("j", ["p"], 1, CommonParameters(), KubernetesParameters(image="i", pvc="c:/data"),
                     root="/tmp/r", env={}, folder_path="/tmp/r/x")


def test_bad_secret_reference_is_refused() -> None:
    with pytest.raises(ValueError, match="secret-name/key"):
        KubernetesParameters(secrets={"A": "no-key"})


def _api_error(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Exception:
    from kubernetes.client.rest import ApiException

    exc = ApiException(status=status, reason="x")
    exc.body = json.dumps(body)
    exc.headers = headers or {}
    return exc


def test_gateway_maps_errors() -> None:
    gateway = KubeGateway()
    forbidden = _api_error(403, {"message": 'jobs.batch is forbidden: User "u" cannot create resource "jobs"'})
    mapped = gateway.map_error(forbidden, "creating Job j", submitting=True)
    assert isinstance(mapped, SubmissionError) and 'cannot create resource "jobs"' in str(mapped)
    missing = _api_error(404, {"message": 'namespaces "nope" not found', "details": {"name": "nope", "kind": "namespaces"}})
    assert "namespace 'nope' does not exist" in str(gateway.map_error(missing, "creating Job j", submitting=True))
    invalid = _api_error(422, {"message": "Job.batch \"j\" is invalid: spec.completions: Invalid value"})
    assert "spec.completions" in str(gateway.map_error(invalid, "creating Job j", submitting=True))
    assert isinstance(gateway.map_error(_api_error(500, {}), "listing", submitting=False), BackendError)


def test_gateway_retries_429_after_retry_after() -> None:
    gateway = KubeGateway()
    assert gateway.transient(_api_error(429, {}, {"Retry-After": "3"})) == 3.0
    assert gateway.transient(_api_error(503, {})) == 0.0
    assert gateway.transient(ConnectionResetError()) == 0.0
    assert gateway.transient(_api_error(422, {})) is None


def _pod(phase: str, *, reason: str | None = None, terminated: str | None = None, exit_code: int = 1,
         waiting: str | None = None, disruption: bool = False, index: int = 0, age: int = 0) -> Any:
    """A pod as the client deserializes it (the models of the kubernetes package)."""
    import datetime

    from kubernetes import client

    state = client.V1ContainerState(
        terminated=client.V1ContainerStateTerminated(exit_code=exit_code, reason=terminated) if terminated else None,
        waiting=client.V1ContainerStateWaiting(reason=waiting, message='Back-off pulling image "x"') if waiting else None,
    )
    conditions = [client.V1PodCondition(type="DisruptionTarget", status="True")] if disruption else None
    created = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(seconds=age)
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=f"p{age}", annotations={INDEX_KEY: str(index)}, creation_timestamp=created),
        status=client.V1PodStatus(
            phase=phase, reason=reason, conditions=conditions,
            container_statuses=[client.V1ContainerStatus(
                name=CONTAINER, image="i", image_id="", ready=False, restart_count=0, state=state)],
        ),
    )


def _job(retries: int = 0) -> Any:
    from kubernetes import client

    return client.V1Job(metadata=client.V1ObjectMeta(name="j", annotations={RETRIES_ANNOTATION: str(retries)}),
                        status=client.V1JobStatus())


def test_failure_table_judged_by_the_main_container() -> None:
    assert task_status(_job(), [_pod("Failed", terminated="OOMKilled", exit_code=137)]).state == JobState.OUT_OF_MEMORY
    assert task_status(_job(), [_pod("Failed", reason="DeadlineExceeded")]).state == JobState.TIMEOUT
    failed = task_status(_job(), [_pod("Failed", terminated="Error", exit_code=3)])
    assert failed.state == JobState.FAILED and "exit code 3" in failed.reason
    assert task_status(_job(retries=1), [_pod("Failed", terminated="Error")]).state == JobState.PENDING
    assert task_status(_job(), [_pod("Running")]).state == JobState.RUNNING


def test_disruptions_do_not_spend_retries_until_the_last() -> None:
    evicted = [_pod("Failed", reason="Evicted", disruption=True, age=i) for i in range(DISRUPTION_RETRIES)]
    assert task_status(_job(), evicted).state == JobState.PENDING
    last = [*evicted, _pod("Failed", reason="Evicted", disruption=True, age=99)]
    assert task_status(_job(), last).state == JobState.PREEMPTED
    # the controller replaces the pod regardless (podFailurePolicy Ignore): the verdict stands
    spent = task_status(_job(), [*last, _pod("Running", age=100)])
    assert spent.state == JobState.PREEMPTED and f"disrupted {DISRUPTION_RETRIES + 1} times" in spent.reason


def test_pending_shows_the_kubelets_reason() -> None:
    waiting = task_status(_job(), [_pod("Pending", waiting="ImagePullBackOff")])
    assert waiting.state == JobState.PENDING and waiting.reason.startswith("ImagePullBackOff: Back-off pulling")


def test_no_cluster_configuration_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No kubeconfig and not in a pod: the executor fails at creation, naming the file it looked
    for, before its folder is written."""
    import jobsub

    missing = tmp_path / "missing-kubeconfig"
    monkeypatch.setenv("KUBECONFIG", str(missing))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(BackendError, match=f"no Kubernetes configuration found: no kubeconfig file at {missing} .from KUBECONFIG."):
        jobsub.AutoExecutor(folder=tmp_path / "runs", cluster="kubernetes")
    assert not (tmp_path / "runs").exists()


def test_no_kubeconfig_anywhere_names_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """KUBECONFIG unset and no ~/.kube/config: the default path is named."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(BackendError, match=f"{tmp_path}/.kube/config .the default.*not in a pod"):
        KubeGateway().check_credentials()


def _kubeconfig(tmp_path: Path, current: str = "test") -> Path:
    path = tmp_path / "kubeconfig.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {}}]\n"
        "contexts: [{name: test, context: {cluster: c, user: u}}]\n"
        f"current-context: '{current}'\n"
    )
    return path


def test_missing_context_is_named_before_the_folder_is_written(tmp_path: Path) -> None:
    """A context the kubeconfig does not have: refused at executor creation, nothing written, no call made."""
    import jobsub
    from jobsub.backends.kubernetes import KubernetesBackend

    path = _kubeconfig(tmp_path)
    backend = KubernetesBackend(str(tmp_path / "runs"), kubeconfig=str(path), context="prod")
    with pytest.raises(BackendError, match=rf"kubeconfig {path} has no context 'prod': its contexts are \['test'\]"):
        jobsub.Executor(folder=tmp_path / "runs", backend=backend)
    assert not (tmp_path / "runs").exists()
    assert not backend.api.counts  # nothing was sent
    KubeGateway(str(path), "test").check_credentials()  # the context that exists passes
    with pytest.raises(BackendError, match=r"kubeconfig .* cannot be read: .*name gone"):
        KubeGateway(str(_kubeconfig(tmp_path, current="gone"))).check_credentials()


def test_debug_without_the_docker_sdk_is_refused_by_submit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``k8s_debug=True`` runs the pods' containers here: without the docker SDK the submit says which
    extra to install (``jobsub[k8s]`` alone lacks it), before anything is written or sent."""
    import sys

    import jobsub

    monkeypatch.setitem(sys.modules, "docker", None)  # not installed
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path)))
    ex = jobsub.AutoExecutor(folder=tmp_path / "runs", cluster="kubernetes")
    ex.update_parameters(k8s_image="python:3.11", k8s_pvc=f"claim:{tmp_path}", k8s_debug=True)
    with pytest.raises(InvalidParameterError, match=r"kubernetes_debug=True .* pip install 'jobsub\[docker\]'"):
        ex.submit(int, 1)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_a_mistyped_key_is_named_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``k8s_`` is the docs' prefix: a typo is named, and the keys suggested, with it (not as ``kubernetes_``)."""
    import jobsub

    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path)))
    ex = jobsub.AutoExecutor(folder=tmp_path / "runs", cluster="kubernetes")
    with pytest.raises(InvalidParameterError, match=r"unknown parameter 'k8s_imag' .* Did you mean 'k8s_image'\?"):
        ex.update_parameters(k8s_imag="python:3.11")
    with pytest.raises(InvalidParameterError, match=r"^k8s_retries=-1: must be at least 0"):
        ex.update_parameters(k8s_retries=-1)
    with pytest.raises(InvalidParameterError, match=r"unknown parameter 'kubernetes_imag' .* 'kubernetes_image'"):
        ex.update_parameters(kubernetes_imag="python:3.11")


def test_k8s_names_the_cluster_as_it_prefixes_its_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``k8s_image`` is ``kubernetes_image``: ``cluster="k8s"`` is ``cluster="kubernetes"`` (was "unknown cluster")."""
    import jobsub

    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path)))
    ex = jobsub.AutoExecutor(folder=tmp_path / "runs", cluster="k8s")
    assert ex.cluster == "kubernetes" and ex.backend.name == "kubernetes"


def test_default_namespace_is_kubectls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``k8s_namespace``: the context's namespace (the named context, else the current one), else
    ``default``; in a pod without a kubeconfig, the service account's namespace."""
    from jobsub.cloud import kube

    path = tmp_path / "kubeconfig.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\nusers: [{name: u, user: {}}]\n"
        "contexts: [{name: a, context: {cluster: c, user: u, namespace: ml}}, {name: b, context: {cluster: c, user: u}}]\n"
        "current-context: a\n"
    )
    assert KubeGateway(str(path)).default_namespace() == "ml"
    assert KubeGateway(str(path), "b").default_namespace() == "default"
    token, namespace = tmp_path / "token", tmp_path / "namespace"
    token.write_text("t")
    namespace.write_text("team-x\n")
    monkeypatch.setattr(kube, "_SERVICE_ACCOUNT_TOKEN", str(token))
    monkeypatch.setattr(kube, "_SERVICE_ACCOUNT_NAMESPACE", str(namespace))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert KubeGateway(str(tmp_path / "none")).default_namespace() == "team-x"


def test_in_cluster_service_account_is_enough(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No kubeconfig but a pod's service account: the credentials are there (checked without a call)."""
    from jobsub.cloud import kube

    token = tmp_path / "token"
    token.write_text("t")
    monkeypatch.setattr(kube, "_SERVICE_ACCOUNT_TOKEN", str(token))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    KubeGateway().check_credentials()


def test_one_task_per_pod_and_the_image_are_checked_before_anything_is_sent(tmp_path: Path) -> None:
    """The executor's checks (Capabilities.one_task_per_job, check_parameters) refuse at submit, no call made."""
    import jobsub
    from jobsub.backends.kubernetes import KubernetesBackend

    backend = KubernetesBackend(str(tmp_path / "runs"), kubeconfig=str(_kubeconfig(tmp_path)))
    ex = jobsub.Executor(folder=tmp_path / "runs", backend=backend)
    with pytest.raises(InvalidParameterError, match="k8s_image="):
        ex.submit(len, "abc")
    ex.update_parameters(image="py", nodes=2)
    with pytest.raises(InvalidParameterError, match="runs one task per job.*nodes=2"):
        ex.submit(len, "abc")
    assert not backend.api.counts


def test_a_spent_task_ends_its_job_only_when_nothing_else_of_it_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Task 0 disrupted four times: while task 1 runs its Job stays (deleting it would kill task 1);
    once task 1 succeeded the Job is deleted and task 0's PREEMPTED is kept by this process."""
    from kubernetes import client

    from jobsub.backends.kubernetes import KubernetesBackend

    backend = KubernetesBackend(str(tmp_path / "runs"), kubeconfig=str(_kubeconfig(tmp_path)))
    deleted: list[str] = []
    monkeypatch.setattr(backend, "_delete", lambda namespace, name: deleted.append(name))
    spent = [_pod("Failed", reason="Evicted", disruption=True, age=i) for i in range(DISRUPTION_RETRIES + 1)]
    job = _job()
    job.metadata.namespace, job.spec = "ns", client.V1JobSpec(completions=2, template=client.V1PodTemplateSpec())
    job.status.succeeded = 0
    backend._end_when_spent("ns.j", job, [*spent, _pod("Running", index=1, age=50)])
    assert not deleted
    job.status.succeeded = 1  # task 1's pod succeeded (succeeded pods are not listed)
    backend._end_when_spent("ns.j", job, [*spent, _pod("Running", age=60)])  # task 0's endless replacement
    assert deleted == ["j"]
    assert backend.states(["ns.j_0"])["ns.j_0"].state == JobState.PREEMPTED
