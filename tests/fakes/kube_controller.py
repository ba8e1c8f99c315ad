"""A played Indexed Job controller, scheduler and kubelet, against a REAL Kubernetes API server.

What is real: the API server (1.20, scripts/start-kube.sh) with etcd, its
validation, label selectors, status subresources, graceful pod deletion and
the garbage collector of kube-controller-manager; the containers, which run
the pod's image on the Docker engine (host network).  What is played here,
because the 1.20 server predates Indexed Jobs and no kubelet runs: the Job
controller and the kubelet.

How the controller knows a Job is Indexed: 1.20 silently drops
``completionMode``, ``backoffLimitPerIndex`` and ``podFailurePolicy`` from a
stored Job, so the controller keeps the manifests *as the client sent them*
(``observe``, fed by the tests' HTTP proxy in front of the API server) and
plays a current controller for those fields.  ``indexed=False`` plays a
controller without Indexed Jobs: pods carry no completion index.

::

    loop (every 0.2 s)
      Jobs of the namespace ──> per index: succeeded? active? failures beyond backoffLimitPerIndex
                                (DisruptionTarget failures ignored per podFailurePolicy)
                            ──> create Pods <job>-<i>-<rand> bound to the node (or Unschedulable)
                            ──> PATCH jobs/<name>/status (active, succeeded, failed, conditions)
      Pods of the node     ──> image missing: ErrImagePull, then ImagePullBackOff
                            ──> docker run --network host; PATCH pods/<name>/status
                            ──> exit: Succeeded / Failed (OOMKilled, Error); past activeDeadlineSeconds:
                                killed, DeadlineExceeded; evict(): killed, Evicted + DisruptionTarget
                            ──> deletionTimestamp: container killed, pod deleted with grace 0
      https kubelet port   ──> /containerLogs/<ns>/<pod>/<container> (the API server's pod log path)
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import logging
import re
import secrets
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger("tests.kube_controller")

INDEX_KEY = "batch.kubernetes.io/job-completion-index"
HOST_PATH_ANNOTATION = "jobsub-test/host-path"
"""On a PersistentVolumeClaim of the tests: the host directory the played kubelet binds for it."""
_JOB_PATH = re.compile(r"/apis/batch/v1/namespaces/([^/]+)/jobs/?(?:\?.*)?$")
_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def quantity(text: str) -> float:
    """A Kubernetes quantity (``512Mi``, ``1.5``, ``250m``) as a number."""
    match = re.fullmatch(r"([0-9.]+)(m|Ki|Mi|Gi|Ti|k|M|G|T)?", str(text))
    if not match:
        raise ValueError(f"not a quantity: {text!r}")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "m" else value * _UNITS.get(unit or "", 1)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any) -> float:
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    return datetime.datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp()


class KubeController:
    """Plays the Job controller, scheduler and kubelet for the Jobs of one namespace.

    Args:
        api: a kubernetes ``ApiClient`` to the real server (not through the tests' fault proxy).
        namespace: the namespace it manages (one per test session).
        engine: a docker SDK client; pods run as its containers.
        cert_dir: where start-kube.sh left the kubelet's serving certificate.
    """

    cpu_capacity = 8
    memory_capacity = "16Gi"

    def __init__(self, api: Any, namespace: str, engine: Any, cert_dir: str) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.namespace = namespace
        self.engine = engine
        self.node = f"jobsub-node-{secrets.token_hex(3)}"
        self.indexed = True
        """False: play a Job controller without Indexed Jobs (pods get no completion index)."""
        self.manifests: dict[str, dict[str, Any]] = {}
        self.pods_created = 0
        self._evict: set[str] = set()
        self._pulls: dict[str, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._kubelet = _kubelet_server(self, cert_dir)
        self._threads = [
            threading.Thread(target=self._kubelet.serve_forever, args=(0.1,), daemon=True),
            threading.Thread(target=self._loop, daemon=True, name="kube-controller"),
        ]

    # -- what tests call ----------------------------------------------------------------------
    def start(self) -> None:
        port = self._kubelet.server_address[1]
        self.core.create_node({"metadata": {"name": self.node}})
        self.core.patch_node_status(self.node, {"status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            "capacity": {"cpu": str(self.cpu_capacity), "memory": self.memory_capacity, "pods": "110"},
            "allocatable": {"cpu": str(self.cpu_capacity), "memory": self.memory_capacity, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "lastHeartbeatTime": _now(), "lastTransitionTime": _now()}],
        }})
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._kubelet.shutdown()
        for container in self._containers():
            with contextlib.suppress(Exception):
                container.remove(force=True)
        with contextlib.suppress(Exception):
            self.core.delete_node(self.node)

    def observe(self, method: str, path: str, body: bytes) -> None:
        """Keep a Job manifest as the client sent it (the fault proxy tells every request)."""
        match = _JOB_PATH.match(path)
        if method != "POST" or not match or match.group(1) != self.namespace:
            return
        with contextlib.suppress(ValueError):
            manifest = json.loads(body)
            with self._lock:
                self.manifests[manifest["metadata"]["name"]] = manifest

    def evict(self, pod_name: str) -> None:
        """Evict a running pod as a kubelet under node pressure does (a disruption)."""
        with self._lock:
            self._evict.add(pod_name)

    # -- the loop -------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self._tick()
            except Exception:  # report, never die: a dead controller would hang every test
                logger.exception("played kube controller")

    def _tick(self) -> None:
        pods = self.core.list_namespaced_pod(self.namespace).items
        for job in self.batch.list_namespaced_job(self.namespace).items:
            if job.metadata.deletion_timestamp is None and not _finished(job):
                mine = [p for p in pods if p.metadata.labels and p.metadata.labels.get("controller-uid") == job.metadata.uid]
                self._sync_job(job, mine)
        names = set()
        for pod in pods:
            names.add(pod.metadata.name)
            if pod.spec.node_name == self.node:
                self._sync_pod(pod)
        for container in self._containers():  # a pod deleted at once (never bound, or forced)
            if container.labels.get("jobsub-test/pod") not in names:
                with contextlib.suppress(Exception):
                    container.remove(force=True)

    # -- the Job controller -----------------------------------------------------------------
    def _sync_job(self, job: Any, pods: list[Any]) -> None:
        with self._lock:
            sent = self.manifests.get(job.metadata.name, {}).get("spec", {})
        indexed = self.indexed and sent.get("completionMode") == "Indexed"
        completions = job.spec.completions or 1
        parallelism = job.spec.parallelism if job.spec.parallelism is not None else 1
        live = [p for p in pods if p.status.phase in ("Pending", "Running", None) and not p.metadata.deletion_timestamp]
        failed = [p for p in pods if p.status.phase == "Failed"]
        succeeded = [p for p in pods if p.status.phase == "Succeeded"]
        status: dict[str, Any] = {"active": len(live), "failed": len(failed), "succeeded": 0}
        if job.status.start_time is None:
            status["startTime"] = _now()
        condition = None
        if indexed:
            per_index = sent.get("backoffLimitPerIndex")
            ignore = _ignores_disruptions(sent.get("podFailurePolicy"))
            done, lost, todo = set(), set(), []
            for i in range(completions):
                own = [p for p in pods if _index(p) == i]
                if any(p.status.phase == "Succeeded" for p in own):
                    done.add(i)
                    continue
                counted = [p for p in own if p.status.phase == "Failed" and not (ignore and _disrupted(p))]
                limit = per_index if per_index is not None else (job.spec.backoff_limit or 0)
                if len(counted) > limit:
                    lost.add(i)
                elif not any(p in live for p in own):
                    todo.append(i)
            status["succeeded"] = len(done)
            for i in todo[: max(0, parallelism - len(live))]:
                self._create_pod(job, i)
            if len(done) == completions:
                condition = ("Complete", "", "")
            elif lost and len(done) + len(lost) == completions:
                condition = ("Failed", "FailedIndexes", "Job has failed indexes")
        else:
            status["succeeded"] = len(succeeded)
            if len(failed) > (job.spec.backoff_limit if job.spec.backoff_limit is not None else 6):
                condition = ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
            elif len(succeeded) >= completions:
                condition = ("Complete", "", "")
            else:
                for _ in range(max(0, min(parallelism, completions - len(succeeded)) - len(live))):
                    self._create_pod(job, None)
        if condition is not None:
            kind, reason, message = condition
            status["conditions"] = [{"type": kind, "status": "True", "reason": reason or None, "message": message or None,
                                     "lastProbeTime": _now(), "lastTransitionTime": _now()}]
            if kind == "Complete":
                status["completionTime"] = _now()
        self.batch.patch_namespaced_job_status(job.metadata.name, self.namespace, {"status": status})

    def _create_pod(self, job: Any, index: int | None) -> None:
        template = self.batch.api_client.sanitize_for_serialization(job.spec.template)
        metadata = template.setdefault("metadata", {})
        metadata.pop("creationTimestamp", None)
        suffix = secrets.token_hex(3)[:5]
        metadata["name"] = f"{job.metadata.name}-{index}-{suffix}" if index is not None else f"{job.metadata.name}-{suffix}"
        metadata["ownerReferences"] = [{
            "apiVersion": "batch/v1", "kind": "Job", "name": job.metadata.name, "uid": job.metadata.uid,
            "controller": True, "blockOwnerDeletion": True,
        }]
        spec = template["spec"]
        if index is not None:
            metadata.setdefault("annotations", {})[INDEX_KEY] = str(index)
            metadata.setdefault("labels", {})[INDEX_KEY] = str(index)
            for container in spec["containers"]:
                container.setdefault("env", []).append({"name": "JOB_COMPLETION_INDEX", "value": str(index)})
        cpus = sum(quantity(((c.get("resources") or {}).get("requests") or {}).get("cpu", "0")) for c in spec["containers"])
        gpus = sum(quantity(((c.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu", "0")) for c in spec["containers"])
        unschedulable = cpus > self.cpu_capacity or gpus > 0
        if not unschedulable:
            spec["nodeName"] = self.node
        pod = self.core.create_namespaced_pod(self.namespace, template)
        self.pods_created += 1
        if unschedulable:
            what = "Insufficient cpu" if cpus > self.cpu_capacity else "Insufficient nvidia.com/gpu"
            self._pod_status(pod.metadata.name, {"phase": "Pending", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": f"0/1 nodes are available: 1 {what}.", "lastTransitionTime": _now(),
            }]})

    # -- the kubelet ----------------------------------------------------------------------------
    def _sync_pod(self, pod: Any) -> None:
        name = pod.metadata.name
        main = pod.spec.containers[0]
        container = self._container(pod)
        if pod.metadata.deletion_timestamp is not None:
            if container is not None:
                with contextlib.suppress(Exception):
                    container.remove(force=True)
            with contextlib.suppress(Exception):
                self.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=0)
            return
        if pod.status.phase in ("Succeeded", "Failed"):
            return
        if container is None:
            self._start(pod, main)
            return
        container.reload()
        state = container.attrs["State"]
        started = _parse_time(pod.status.start_time) if pod.status.start_time else time.time()
        with self._lock:
            evicted = name in self._evict
            self._evict.discard(name)
        if evicted:
            container.kill()
            self._end(pod, main, 137, "Error", "Failed", "Evicted", "The node was low on resource: memory.",
                      disruption="TerminationByKubelet")
        elif state["Running"] and pod.spec.active_deadline_seconds and time.time() - started > pod.spec.active_deadline_seconds:
            container.kill()
            self._end(pod, main, 137, "Error", "Failed", "DeadlineExceeded",
                      "Pod was active on the node longer than the specified deadline")
        elif not state["Running"]:
            code = int(state["ExitCode"])
            reason = "OOMKilled" if state.get("OOMKilled") else ("Completed" if code == 0 else "Error")
            self._end(pod, main, code, reason, "Succeeded" if code == 0 else "Failed", None, None)

    def _start(self, pod: Any, main: Any) -> None:
        import docker.errors

        name = pod.metadata.name
        try:
            self.engine.images.get(main.image)
        except docker.errors.ImageNotFound:
            tries = self._pulls[name] = self._pulls.get(name, 0) + 1
            reason, message = ("ErrImagePull", f'failed to pull and unpack image "{main.image}": not found') if tries < 3 else (
                "ImagePullBackOff", f'Back-off pulling image "{main.image}"')
            self._pod_status(name, {"phase": "Pending", "startTime": _now(), "hostIP": "127.0.0.1", "containerStatuses": [
                {"name": main.name, "image": main.image, "imageID": "", "ready": False, "restartCount": 0,
                 "state": {"waiting": {"reason": reason, "message": message}}}]})
            return
        limits = (main.resources.limits or {}) if main.resources else {}
        binds = self._binds(pod, main)
        self.engine.containers.run(
            main.image, command=[*(main.command or []), *(main.args or [])], detach=True, network_mode="host",
            environment=self._env(pod, main), working_dir=main.working_dir, volumes=binds,
            mem_limit=int(quantity(limits["memory"])) if "memory" in limits else None,
            memswap_limit=int(quantity(limits["memory"])) if "memory" in limits else None,
            name=f"k8s_{main.name}_{name}_{self.namespace}", labels={"jobsub-test/pod": name, "jobsub-test/node": self.node},
        )
        self._pod_status(name, {
            "phase": "Running", "startTime": _now(), "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": _now()}],
            "containerStatuses": [{"name": main.name, "image": main.image, "imageID": "", "ready": True, "restartCount": 0,
                                   "state": {"running": {"startedAt": _now()}}}],
        })

    def _end(self, pod: Any, main: Any, code: int, reason: str, phase: str, pod_reason: str | None,
             message: str | None, disruption: str | None = None) -> None:
        status: dict[str, Any] = {"phase": phase, "reason": pod_reason, "message": message, "containerStatuses": [
            {"name": main.name, "image": main.image, "imageID": "", "ready": False, "restartCount": 0,
             "state": {"terminated": {"exitCode": code, "reason": reason, "finishedAt": _now()}}}]}
        if disruption:
            status["conditions"] = [{"type": "DisruptionTarget", "status": "True", "reason": disruption,
                                     "message": message, "lastTransitionTime": _now()}]
        self._pod_status(pod.metadata.name, status)

    def _pod_status(self, name: str, status: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):  # the pod may be gone meanwhile
            self.core.patch_namespaced_pod_status(name, self.namespace, {"status": status})

    def _env(self, pod: Any, main: Any) -> dict[str, str]:
        env = {}
        for item in main.env or []:
            if item.value_from is None:
                env[item.name] = item.value or ""
            elif item.value_from.secret_key_ref is not None:
                ref = item.value_from.secret_key_ref
                secret = self.core.read_namespaced_secret(ref.name, self.namespace)
                env[item.name] = base64.b64decode(secret.data[ref.key]).decode()
            elif item.value_from.field_ref is not None:
                path = item.value_from.field_ref.field_path
                found = re.fullmatch(r"metadata\.annotations\['(.+)'\]", path)
                env[item.name] = (pod.metadata.annotations or {}).get(found.group(1), "") if found else {
                    "metadata.name": pod.metadata.name, "metadata.namespace": self.namespace}.get(path, "")
        return env

    def _binds(self, pod: Any, main: Any) -> dict[str, dict[str, str]]:
        claims = {v.name: v.persistent_volume_claim.claim_name for v in pod.spec.volumes or [] if v.persistent_volume_claim}
        binds = {}
        for mount in main.volume_mounts or []:
            if mount.name in claims:
                claim = self.core.read_namespaced_persistent_volume_claim(claims[mount.name], self.namespace)
                host = (claim.metadata.annotations or {})[HOST_PATH_ANNOTATION]
                binds[host] = {"bind": mount.mount_path, "mode": "ro" if mount.read_only else "rw"}
        return binds

    def _containers(self) -> list[Any]:
        return list(self.engine.containers.list(all=True, filters={"label": f"jobsub-test/node={self.node}"}))

    def _container(self, pod: Any) -> Any:
        import docker.errors

        try:
            return self.engine.containers.get(f"k8s_{pod.spec.containers[0].name}_{pod.metadata.name}_{self.namespace}")
        except docker.errors.NotFound:
            return None

    def container_logs(self, namespace: str, pod: str, container: str, query: dict[str, list[str]]) -> bytes | None:
        import docker.errors

        try:
            found = self.engine.containers.get(f"k8s_{container}_{pod}_{namespace}")
        except docker.errors.NotFound:
            return None
        tail = query.get("tailLines")
        data: bytes = found.logs(stdout=True, stderr=True, tail=int(tail[0]) if tail else "all")
        limit = query.get("limitBytes")
        return data[: int(limit[0])] if limit else data


def _finished(job: Any) -> bool:
    return any(c.type in ("Complete", "Failed") and c.status == "True" for c in job.status.conditions or [])


def _index(pod: Any) -> int | None:
    value = (pod.metadata.annotations or {}).get(INDEX_KEY)
    return int(value) if value is not None else None


def _disrupted(pod: Any) -> bool:
    return any(c.type == "DisruptionTarget" and c.status == "True" for c in pod.status.conditions or [])


def _ignores_disruptions(policy: dict[str, Any] | None) -> bool:
    for rule in (policy or {}).get("rules", []):
        if rule.get("action") == "Ignore" and any(
            p.get("type") == "DisruptionTarget" for p in rule.get("onPodConditions", [])
        ):
            return True
    return False


def _kubelet_server(controller: KubeController, cert_dir: str) -> ThreadingHTTPServer:
    """The kubelet's HTTPS port: the API server fetches pod logs from it."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            parts = url.path.strip("/").split("/")
            data = None
            if len(parts) == 4 and parts[0] == "containerLogs":
                data = controller.container_logs(parts[1], parts[2], parts[3], urllib.parse.parse_qs(url.query))
            if data is None:
                self.send_response(404)
                data = b"container not found"
            else:
                self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(f"{cert_dir}/kubelet.crt", f"{cert_dir}/kubelet.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server
