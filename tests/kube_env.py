"""The Kubernetes cluster of the tests: a real API server, a played Job controller and kubelet.

Needs ``eval "$(scripts/start-kube.sh)"`` (KUBECONFIG: the plain-HTTP
``kubectl proxy`` of a real 1.20 API server), a Docker engine and
``JOBSUB_CLOUD_TEST_IMAGE``; skipped, naming them, otherwise.  Made once per
test process on first use: a namespace of its own, a fault proxy in front of
the API server (the tests' KUBECONFIG points at it, so another process of a
test talks through it too) and ``tests.fakes.kube_controller`` playing the
Job controller and kubelet for that namespace.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import secrets
import tempfile
from dataclasses import dataclass
from typing import Any

from tests import docker_env
from tests.conftest import skip_if
from tests.emulators import FaultProxy, endpoint_problem
from tests.fakes.kube_controller import HOST_PATH_ANNOTATION, KubeController

PVC = "jobsub-test-tmp"
"""A claim the played kubelet binds to the host's /tmp: job folders under /tmp are seen at the same path."""


@dataclass
class Cluster:
    namespace: str
    kubeconfig: str
    proxy: FaultProxy
    controller: KubeController
    api: Any  # an ApiClient straight to the server (not through the fault proxy)

    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api)

    def batch(self) -> Any:
        from kubernetes import client

        return client.BatchV1Api(self.api)


def _server() -> str | None:
    """The URL of kubectl proxy from the KUBECONFIG start-kube.sh wrote, or None."""
    path = os.environ.get("KUBECONFIG", "")
    if not path or not os.path.exists(path):
        return None
    import yaml

    with open(path) as stream:
        config = yaml.safe_load(stream)
    return str(config["clusters"][0]["cluster"]["server"])


@functools.cache
def problem() -> str | None:
    """Why the Kubernetes tests cannot run here, or None."""
    try:
        import kubernetes  # noqa: F401
    except ImportError:
        return "the kubernetes client is not installed (pip install -e '.[test]')"
    if not os.environ.get("JOBSUB_KUBE_DIR"):
        return 'JOBSUB_KUBE_DIR is not set: start the API server with eval "$(scripts/start-kube.sh)"'
    found = endpoint_problem("KUBECONFIG", "start-kube.sh", "/api/v1/namespaces/default", b'"default"', _server())
    if found:
        return found
    engine = docker_env.cloud_image_problem() or docker_env.problem()  # the played kubelet runs pods on it
    if engine:
        return engine
    cluster()  # before any backend reads KUBECONFIG: every client then goes through the proxy
    return None


@functools.cache
def cluster() -> Cluster:
    """The process's namespace, fault proxy and played controller (made on first use)."""
    import docker
    from kubernetes import config

    upstream = _server()
    assert upstream
    api = config.new_client_from_config(config_file=os.environ["KUBECONFIG"])
    namespace = f"jobsub-test-{secrets.token_hex(4)}"
    from kubernetes import client

    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": namespace}})
    core.create_namespaced_persistent_volume_claim(namespace, {
        "metadata": {"name": PVC, "annotations": {HOST_PATH_ANNOTATION: tempfile.gettempdir()}},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
    })
    controller = KubeController(api, namespace, docker.from_env(), os.environ["JOBSUB_KUBE_DIR"])
    proxy = FaultProxy(upstream)
    proxy.observers.append(controller.observe)
    controller.start()
    handle, kubeconfig = tempfile.mkstemp(prefix="jobsub-kubeconfig-", suffix=".yaml")
    with os.fdopen(handle, "w") as stream:
        stream.write(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: test, cluster: {{server: '{proxy.url}'}}}}]\n"
            "users: [{name: test, user: {}}]\n"
            f"contexts: [{{name: test, context: {{cluster: test, user: test, namespace: {namespace}}}}}]\n"
            "current-context: test\n"
        )

    def teardown() -> None:
        controller.stop()
        with contextlib.suppress(Exception):
            core.delete_namespace(namespace)
        proxy.close()
        os.unlink(kubeconfig)

    atexit.register(teardown)
    os.environ["KUBECONFIG"] = kubeconfig  # this process's clients and the ones it starts go through the proxy
    return Cluster(namespace, kubeconfig, proxy, controller, api)


def require() -> None:
    skip_if(problem())


def parameters() -> dict[str, Any]:
    """What an executor passes to run tasks on the test cluster, folders under /tmp through the claim."""
    found = cluster()
    return {
        "k8s_namespace": found.namespace,
        "k8s_image": os.environ["JOBSUB_CLOUD_TEST_IMAGE"],
        "k8s_pvc": f"{PVC}:{tempfile.gettempdir()}",
    }
