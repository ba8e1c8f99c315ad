"""The Kubernetes backend: one Indexed Job per array, state at O(1) calls per poll.

::

    submit ─> (the core shipped the code package: Launch.code_package)
           ─> POST jobs <name>   name from the submission's tag: a lost answer's retry gets 409,
                                 and the Job is adopted (never two)
    states ─> GET jobs?labelSelector=root           one call for every tracked Job of the folder
           ─> GET pods?labelSelector=root&status.phase!=Succeeded   pages of the unfinished pods
           ─> per index (status.py); successes are the folder's results, never polled
           ─> pods without a completion index: the cluster runs no Indexed Jobs -> FAILED at once
           ─> an image that cannot be pulled past k8s_start_timeout_min: logs kept, Job deleted
           ─> a task disrupted more than three times: PREEMPTED; its Job deleted once nothing else runs
              (each of these ends recorded in the folder first: ForgottenJobs.record_end; another
              process reads it there once the Job is gone, not LOST)
    cancel ─> DELETE the Job (background propagation) when it is cancelled whole; a task of an
              array cancelled alone is left to its worker, which finds the cancel in the folder
    logs   ─> read_namespaced_pod_log of the task's latest pod, else the worker's copy in the folder
    debug  ─> the same image, command and folder, attached on this machine's engine (run_submission_here)

Backend ids are ``<namespace>.<job name>``; task i of an array is ``<id>_<i>``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ...cloud.arrays import CancelledAlone, ForgottenJobs, split_id
from ...cloud.attached import attached_states, is_attached, run_submission_here
from ...cloud.container import container_command
from ...cloud.kube import KubeGateway, status_of
from ...cloud.logs import provider_or_folder_logs
from ...errors import InvalidParameterError, JobsubError
from ...folder import JobFolder
from ...parameters import Resolved
from ...states import JobState, Status
from ..base import Backend, Capabilities, Launch
from . import status as pod_status
from .manifest import (
    CONTAINER,
    JOB_LABEL,
    MAX_COMPLETIONS,
    ROOT_LABEL,
    job_manifest,
    job_name,
    root_label,
)
from .params import KubernetesParameters

__all__ = ["KubernetesBackend"]

logger = logging.getLogger("jobsub.kubernetes")

JOB_ID_VARIABLE = "JOBSUB_K8S_JOB_ID"
FORGOTTEN_GRACE_S = 30.0
"""A Job not listed this soon after its submission may just not be listed yet."""
PAGE = 500
"""Pods per list call."""
NO_INDEX = (
    "the cluster's Job controller does not run Indexed Jobs (completionMode: Indexed needs "
    "Kubernetes 1.21+, backoffLimitPerIndex 1.29+): pod {pod} has no completion index"
)


class KubernetesBackend(Backend):
    """Runs tasks as pods of Indexed Jobs, with folders on a claim (``k8s_pvc``) or ``s3://``/``gs://``.

    Args:
        root: the executor's folder.
        kubeconfig: the kubeconfig file (default ``$KUBECONFIG``, then ``~/.kube/config``, then
            the in-cluster service account); recorded so that another process reattaches alike.
        context: its context (default: the current one).
    """

    name = "kubernetes"
    Parameters = KubernetesParameters
    task_env: ClassVar[Mapping[str, str]] = {"index": "JOB_COMPLETION_INDEX"}
    poll_interval_s = 2.0
    capabilities = Capabilities(
        ranks=False, checkpoint=False, local_folders=True, object_store_folders=True, client_disk=False, env_shown=True,
        one_task_per_job=True,  # an Indexed Job's pod runs one task
    )
    result_parameters = ("image", "python")

    def __init__(self, root: str, kubeconfig: str | None = None, context: str | None = None) -> None:
        super().__init__(root)
        self.kubeconfig = kubeconfig or os.environ.get("KUBECONFIG") or None
        self.context = context
        self.api = KubeGateway(self.kubeconfig, context)
        self._final: dict[str, Status] = {}  # Jobs this process ended (cancelled, refused, unpullable)
        self._ended_tasks: dict[tuple[str, int], Status] = {}  # (Job id, index) -> final, of Jobs it deleted
        self._start_limits: dict[str, float] = {}  # Job id -> k8s_start_timeout_min
        self._forgotten = ForgottenJobs(lambda: self.storage, "Kubernetes")
        self._alone = CancelledAlone()  # tasks of an array cancelled alone (see cancel)

    def config(self) -> dict[str, Any]:
        found: dict[str, Any] = {"root": self.root}
        if self.kubeconfig:
            found["kubeconfig"] = self.kubeconfig
        if self.context:
            found["context"] = self.context
        return found

    def check(self) -> None:
        """The client importable and a configuration found; no call to the cluster yet."""
        self.api.client("batch")

    def check_parameters(self, params: Resolved) -> None:
        if not params.specific.image:
            raise InvalidParameterError("set the image of the tasks: k8s_image='registry/name:tag'")

    def max_array_size(self, params: Resolved) -> int:
        return MAX_COMPLETIONS

    # -- submission -------------------------------------------------------------------------
    def submit(self, launch: Launch, n_tasks: int, params: Resolved, folder: JobFolder, *, array: bool) -> str:
        common, spec = params.common, params.specific  # checked by check_parameters and the executor
        folder_path = str(folder.storage.local_path("")) if folder.path is not None else None
        if folder_path is not None and not spec.pvc:
            raise InvalidParameterError(
                f"pods cannot see {folder_path}: set k8s_pvc='claim[:/mount/path]' (a claim holding that path)"
                " or give the executor an s3:// or gs:// folder"
            )
        if not spec.namespace:
            spec = dataclasses.replace(spec, namespace=self.api.default_namespace())
        name = job_name(launch.tag or folder.key)
        job_id = f"{spec.namespace}.{name}"
        # the task names itself as jobsub does: <namespace>.<Job name>[_<index>].  Not the kit's
        # scheduled_launch: it leaves the streams to the provider's log, and a pod's log goes with
        # the pod (ttlSecondsAfterFinished, a cancel); the worker's copy in the folder outlives both
        launch = launch.replace(
            env={**launch.env, JOB_ID_VARIABLE: job_id},
            task_env={**launch.task_env, ("array_job_id" if array else "job_id"): JOB_ID_VARIABLE},
        )
        argv = container_command(launch, spec.python)
        if spec.debug:  # the same image, command and folder, on this machine's Docker engine
            return self._run_here(launch, argv, n_tasks, params, folder)
        manifest = job_manifest(
            name, argv, n_tasks, common, spec, root=self.root, env=dict(launch.env), folder_path=folder_path,
        )
        self._create(manifest)
        self._start_limits[job_id] = spec.start_timeout_min
        return job_id

    def _create(self, manifest: dict[str, Any]) -> None:
        """POST the Job; a 409 for our own name is the answer of an earlier try that was lost: adopted."""
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        what = f"creating Job {name} in namespace {namespace}"
        try:
            self.api.call("batch", "create_namespaced_job", what=what, submitting=True, namespace=namespace, body=manifest)
        except JobsubError as exc:
            if status_of(exc) != 409:
                raise
            logger.warning("Job %s/%s exists already (an earlier answer was lost): adopted", namespace, name)

    def _run_here(self, launch: Launch, argv: list[str], n_tasks: int, params: Resolved, folder: JobFolder) -> str:
        """``debug=True``: the kit's attached run, with the variables a pod sees and the claim's folder."""
        shared = [str(folder.storage.local_path(""))] if folder.path is not None else []  # the claim's path

        def env_of(index: int, job_id: str) -> dict[str, str]:
            return {**launch.env, JOB_ID_VARIABLE: job_id, "JOB_COMPLETION_INDEX": str(index)}

        return run_submission_here(
            launch, argv, params.specific.image, n_tasks, params.common, folder, env_of, shared=shared,
        )

    def find_submitted(self, launch: Launch, folder: JobFolder) -> str | None:
        namespace = folder.read_meta()["parameters"]["specific"]["namespace"] or self.api.default_namespace()
        name = job_name(launch.tag or folder.key)
        jobs = self.api.call(
            "batch", "list_namespaced_job", namespace=namespace, label_selector=f"{JOB_LABEL}={name}",
        ).items
        return f"{namespace}.{name}" if jobs else None

    # -- states ---------------------------------------------------------------------------------
    def states(self, backend_ids: Sequence[str]) -> dict[str, Status]:
        by_namespace: dict[str, list[str]] = defaultdict(list)
        answer = attached_states(self.storage, [i for i in backend_ids if is_attached(i)])
        for backend_id in backend_ids:
            if is_attached(backend_id):
                continue
            job, index = split_id(backend_id)
            alone = self._alone.status(backend_id)
            if job in self._final:
                answer[backend_id] = self._final[job]
            elif (job, index or 0) in self._ended_tasks:
                answer[backend_id] = self._ended_tasks[job, index or 0]
            elif alone is not None:  # cancelled alone by this process: its siblings run on
                answer[backend_id] = alone
            elif "." not in job:
                answer[backend_id] = Status(JobState.LOST, f"not a Kubernetes job id: {backend_id}")
            else:
                by_namespace[job.partition(".")[0]].append(backend_id)
        for namespace, ids in by_namespace.items():
            answer.update(self._namespace_states(namespace, ids))
        return answer

    def _namespace_states(self, namespace: str, backend_ids: list[str]) -> dict[str, Status]:
        selector = f"{ROOT_LABEL}={root_label(self.root)}"
        jobs = {j.metadata.name: j for j in self.api.call(
            "batch", "list_namespaced_job", namespace=namespace, label_selector=selector,
        ).items}
        pods: dict[str, list[Any]] = defaultdict(list)
        for pod in self._unfinished_pods(namespace, selector):
            pods[(pod.metadata.labels or {}).get(JOB_LABEL, "")].append(pod)
        answer: dict[str, Status] = {}
        judged: set[str] = set()
        forgotten: dict[str, list[tuple[str, int | None]]] = defaultdict(list)  # the folder judges each Job once
        for backend_id in backend_ids:
            job_key, index_or_none = split_id(backend_id)
            name, index = job_key.partition(".")[2], index_or_none or 0
            job = jobs.get(name)
            if job is None:  # deleted (by its TTL, by a cancel elsewhere) or not listed yet: the folder decides
                forgotten[job_key].append((backend_id, index_or_none))
                continue
            refused = self._refused(job_key, job, pods[name])
            if refused is not None:
                answer[backend_id] = refused
                continue
            mine = [p for p in pods[name] if pod_status.index_of(p) == index]
            answer[backend_id] = pod_status.task_status(job, mine)
            if name not in judged:
                judged.add(name)
                self._end_when_spent(job_key, job, pods[name])
        for job_key, members in forgotten.items():
            answer.update(self._forgotten.judge(
                job_key, members, grace_s=FORGOTTEN_GRACE_S,
                forgets="a finished Job is deleted after ttlSecondsAfterFinished, a cancelled one at once",
            ))
        return answer

    def _end_when_spent(self, job_key: str, job: Any, pods: list[Any]) -> None:
        """Delete a Job left with nothing to do but replace the pods of tasks already PREEMPTED.

        Its ``podFailurePolicy`` ignores disruptions, so the controller would retry a task past
        jobsub's limit for ever; once every other task has ended, the final states of its failed
        tasks are recorded in the folder (``ForgottenJobs.record_end``: a process that did not
        delete it reads PREEMPTED there, not LOST) and kept here, and the Job is deleted.
        """
        if not any(p.status.phase == "Failed" for p in pods):
            return
        by_index: dict[int, list[Any]] = defaultdict(list)
        for pod in pods:
            by_index[pod_status.index_of(pod) or 0].append(pod)
        spent = {i for i, mine in by_index.items() if pod_status.over_disrupted(mine) is not None}
        if not spent:
            return
        ended = {i: status for i, mine in by_index.items() if (status := pod_status.task_status(job, mine)).state.is_final}
        live = {i for i, mine in by_index.items() if any(p.status.phase in ("Pending", "Running") for p in mine)}
        if live - spent or (job.status.succeeded or 0) + len(ended) < (job.spec.completions or 1):
            return  # other tasks still run or wait for a slot: the Job stays
        self._forgotten.record_end(job_key, ended)
        self._ended_tasks.update({(job_key, i): status for i, status in ended.items()})
        logger.warning("Job %s ends: tasks %s disrupted more than %d times", job_key, sorted(spent),
                       pod_status.DISRUPTION_RETRIES)
        self._delete(job.metadata.namespace, job.metadata.name)

    def _unfinished_pods(self, namespace: str, selector: str) -> list[Any]:
        found: list[Any] = []
        token = None
        while True:
            page = self.api.call(
                "core", "list_namespaced_pod", namespace=namespace, label_selector=selector,
                field_selector="status.phase!=Succeeded", limit=PAGE, **({"_continue": token} if token else {}),
            )
            found += page.items
            token = page.metadata._continue
            if not token:
                return found

    def _refused(self, job_key: str, job: Any, pods: list[Any]) -> Status | None:
        """A Job that can never do its work: ended now (deleted, its logs kept), its status final."""
        for pod in pods:
            if pod_status.index_of(pod) is None:
                return self._end(job_key, job, Status(JobState.FAILED, NO_INDEX.format(pod=pod.metadata.name)))
            main = pod_status.main_status(pod)
            waiting = main.state.waiting if main is not None and main.state else None
            if waiting is not None and waiting.reason in pod_status.PULL_ERRORS:
                limit_s = 60 * self._start_limits.get(job_key, KubernetesParameters.start_timeout_min)
                created = pod.metadata.creation_timestamp.timestamp()
                if time.time() - created > limit_s:
                    image = pod.spec.containers[0].image
                    reason = f"image {image!r} cannot start: {waiting.reason}: {waiting.message or ''}".rstrip(": ")
                    return self._end(job_key, job, Status(JobState.FAILED, reason))
        return None

    def _end(self, job_key: str, job: Any, status: Status) -> Status:
        """Record ``status`` for every unfinished task in the folder (read by every other process
        once the Job is gone), keep it here, and delete the Job."""
        logger.warning("Job %s ends: %s", job_key, status.reason)
        self._forgotten.record_end(job_key, status)
        self._final[job_key] = status
        self._delete(job.metadata.namespace, job.metadata.name)
        return status

    # -- cancel and logs ------------------------------------------------------------------
    def cancel(self, backend_ids: Sequence[str]) -> None:
        """Delete the Jobs named whole (a plain job, an array by its own id, or an array all of
        whose tasks are cancelled); a task of an array cancelled alone is left to its worker.

        Deleting an Indexed Job ends every index, and the API servers without per-index failure
        policies (1.20, which the tests run) cannot end one index alone.  ``Job.cancel``
        recorded the cancel in the folder: the task's worker does not start it, or does not
        publish its result if its pod already runs (the pod computes on until the function
        returns), and the task reads CANCELLED while its siblings run on
        (``jobsub.cloud.arrays.CancelledAlone``).
        """
        for backend_id in backend_ids:
            job_key, index = split_id(backend_id)
            if is_attached(job_key) or "." not in job_key or job_key in self._final:
                continue
            namespace, _, name = job_key.partition(".")
            if index is not None:
                size = self._completions(namespace, name)
                if size is None or (size > 1 and not self._alone.add(job_key, index, size)):
                    continue  # gone already, or its siblings run on
            self._final[job_key] = Status(JobState.CANCELLED, "the Job was deleted (cancelled)")
            self._delete(namespace, name)

    def _completions(self, namespace: str, name: str) -> int | None:
        """How many tasks Job ``name`` runs; None if it is gone."""
        try:
            job = self.api.call("batch", "read_namespaced_job", what=f"reading Job {namespace}/{name}",
                                name=name, namespace=namespace)
        except JobsubError as exc:
            if status_of(exc) != 404:
                raise
            return None
        return int(job.spec.completions or 1)

    def _delete(self, namespace: str, name: str) -> None:
        try:
            self.api.call(
                "batch", "delete_namespaced_job", what=f"deleting Job {namespace}/{name}",
                name=name, namespace=namespace, propagation_policy="Background",
            )
        except JobsubError as exc:
            if status_of(exc) != 404:  # gone already: what a delete wants
                raise

    def logs(self, backend_id: str, folder: JobFolder, index: int, rank: int) -> tuple[str | None, str | None]:
        """The log of the pod that ran the task (the kit's policy: else the folder's).

        The task has ended when its latest pod has (one list call): not when its whole Job has,
        which for an array waits on the other tasks.
        """
        if is_attached(backend_id):
            return super().logs(backend_id, folder, index, rank)
        seen: list[Any] = []  # the task's latest pod, as `ended` last listed it

        def ended() -> bool:
            seen[:] = [self._latest_pod(backend_id)]
            return seen[0] is None or seen[0].status.phase in ("Succeeded", "Failed")

        return provider_or_folder_logs(
            folder, index, rank, ended=ended, read=lambda: self._pod_log(seen[0] if seen else self._latest_pod(backend_id)),
        )

    def _latest_pod(self, backend_id: str) -> Any:
        """The newest pod of the task (its last try), or None (not made yet, or deleted)."""
        job_key, index = split_id(backend_id)
        namespace, _, name = job_key.partition(".")
        pods = [p for p in self.api.call(
            "core", "list_namespaced_pod", namespace=namespace, label_selector=f"{JOB_LABEL}={name}",
        ).items if pod_status.index_of(p) == (index or 0)]
        return max(pods, key=lambda p: p.metadata.creation_timestamp) if pods else None

    def _pod_log(self, pod: Any) -> str | None:
        if pod is None:
            return None
        try:
            return str(self.api.call(
                "core", "read_namespaced_pod_log", name=pod.metadata.name, namespace=pod.metadata.namespace,
                container=CONTAINER,
            ))
        except JobsubError:  # the kubelet forgot it, or it never started
            logger.debug("no log for pod %s", pod.metadata.name, exc_info=True)
            return None
