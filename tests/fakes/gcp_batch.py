"""A fake of Google Cloud Batch v1 (and Cloud Logging's ``entries:list``) that runs tasks for real.

No Batch emulator exists (none on PyPI, npm or in the gcloud SDK), so the
suite plays the control plane itself.  The real ``google-cloud-batch`` and
``google-cloud-logging`` clients talk to it over REST
(``client_options={"api_endpoint": fake.url}``, anonymous credentials), so
the requests they send and the answers they parse are the wire format users
run.  What is real and what is played::

    real    the clients, their JSON (proto-plus), HTTP, the error bodies they map to exceptions;
            each task: a container of the job's image on the Docker engine (``--network host``),
            its exit code, its output
    played  scheduling: tasks start at once, ``parallelism`` at a time (RUNNING as Batch says it;
            ``max_containers`` containers at once over all jobs, the others wait their turn);
            the VM is the container (``memory_mib`` becomes its memory limit); preemption on
            request; a job whose machine type is ``fake-no-capacity`` never leaves QUEUED

As Batch does, it refuses unknown JSON fields (``Job.from_json``), job ids
off ``^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$``, labels off Google's label rule,
more than one task group or lifecycle policy, task counts over 100,000 and
``parallelism`` over 5,000; answers a second ``job_id`` with 409
ALREADY_EXISTS, but a repeated ``request_id`` with the job it made; stops a
task at ``max_run_duration`` with exit code 50005 and a preempted one with
50001 (Batch's reserved codes), retrying by the job's lifecycle policy and
``max_retry_count``; keeps task-group counts by state name and status
events with the task's exit code; serves a task's output as Cloud Logging
entries of ``projects/P/logs/batch_task_logs`` labelled ``job_uid`` and
``task_id`` (``task/<uid>-group0-<index>/<attempt>/0``).

``calls`` counts requests by RPC name (the benchmark reads it).  It scales to
a task group of 100,000: one scheduler thread per job, ``max_containers``
runner threads in all, task-group counts kept as tasks move.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import json
import logging
import queue
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.cloud import batch_v1

logger = logging.getLogger("tests.fakes.gcp_batch")

PREEMPTED = 50001
MAX_RUN_DURATION = 50005
NO_CAPACITY = "fake-no-capacity"
QUOTA_EVENT = (
    "Quota checking process decides to delay scheduling for the job {job} due to inadequate quotas "
    "[Quota: GPUS, limit: 0, usage: 0, wanted: 1.]"
)
_JOB_ID = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_JOB_PATH = re.compile(r"^/v1/(projects/[^/]+/locations/[^/]+)/jobs(?:/([^/:]+))?(:cancel)?$")
_TASKS_PATH = re.compile(r"^/v1/(projects/[^/]+/locations/[^/]+/jobs/[^/]+/taskGroups/[^/]+)/tasks(?:/(\d+))?$")
State: Any = batch_v1.JobStatus.State
TaskState: Any = batch_v1.TaskStatus.State


class ApiError(Exception):
    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code, self.status, self.message = code, status, message


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Task:
    index: int
    state: Any = TaskState.PENDING
    events: list[tuple[str, datetime.datetime, Any, int | None]] = field(default_factory=list)
    """Status events as (description, time, state, exit code): made messages only when asked for."""
    attempt: int = 0
    container: Any = None
    preempt: bool = False

    def take_preempt(self) -> bool:
        """Whether it was to be preempted (then no longer: one preemption per request)."""
        found, self.preempt = self.preempt, False
        return found


@dataclass
class _Job:
    job: batch_v1.Job
    tasks: list[_Task]
    cancel: str = ""  # "", "cancel" or "delete"
    started: float = 0.0
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    """Tasks by state name, kept as they move (GetJob of a large job scans nothing)."""
    active: int = 0
    """Tasks started and not ended (at most ``parallelism``)."""

    def cancelled(self) -> bool:
        return bool(self.cancel)


class FakeBatch:
    """The fake's state and its HTTP server on 127.0.0.1 (a port of its own).

    Args:
        execute: run tasks as containers; False: tasks reach RUNNING (``parallelism`` at a
            time) and stay there (the benchmark's 10,000-task poll).
        max_containers: containers at once over all jobs (this machine has 2 cores).
    """

    def __init__(self, *, execute: bool = True, max_containers: int = 4) -> None:
        self.execute = execute
        self.calls: collections.Counter[str] = collections.Counter()
        self.created: list[str] = []
        self._jobs: dict[str, _Job] = {}
        self._request_ids: dict[str, str] = {}
        self._entries: list[dict[str, Any]] = []
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)  # a task ended, or a job was cancelled
        self._runs: queue.SimpleQueue[tuple[_Job, _Task]] = queue.SimpleQueue()
        for number in range(max_containers if execute else 0):
            threading.Thread(target=self._runner, daemon=True, name=f"fake-batch runner {number}").start()
        self._docker: Any = None
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        with self._lock:
            for job in self._jobs.values():
                job.cancel = job.cancel or "cancel"
            self._changed.notify_all()
        self._server.shutdown()
        self._server.server_close()

    # -- what tests do besides calling the API -------------------------------------------------
    def preempt(self, job_name: str, index: int) -> bool:
        """Reclaim task ``index``'s VM: its running attempt, or its next one, ends with 50001."""
        with self._lock:
            job = self._jobs.get(job_name)
            if job is None or job.tasks[index].state in (TaskState.SUCCEEDED, TaskState.FAILED):
                return False
            task = job.tasks[index]
            task.preempt = True
            if task.container is not None:
                _kill(task.container)
            return True

    def job(self, job_name: str) -> batch_v1.Job | None:
        with self._lock:
            found = self._jobs.get(job_name)
            return self._render(found) if found else None

    def jobs(self) -> list[str]:
        with self._lock:
            return list(self._jobs)

    # -- the API -----------------------------------------------------------------------------------
    def create_job(self, parent: str, query: dict[str, str], body: bytes) -> batch_v1.Job:
        self.calls["CreateJob"] += 1
        job_id = query.get("jobId") or query.get("job_id") or f"j-{uuid.uuid4()}"
        request_id = query.get("requestId") or query.get("request_id") or ""
        if not _JOB_ID.match(job_id):
            raise ApiError(400, "INVALID_ARGUMENT", f"job_id {job_id!r} must match {_JOB_ID.pattern}")
        try:
            job = batch_v1.Job.from_json(body.decode() or "{}")
        except Exception as exc:  # json_format.ParseError: unknown field, wrong type
            raise ApiError(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {exc}") from None
        _validate(job)
        name = f"{parent}/jobs/{job_id}"
        with self._lock:
            if request_id and request_id in self._request_ids:
                return self._render(self._jobs[self._request_ids[request_id]])
            if name in self._jobs:
                raise ApiError(409, "ALREADY_EXISTS", f"Job {name} already exists")
            group = job.task_groups[0]
            group.name = f"{name}/taskGroups/group0"
            group.task_count = group.task_count or 1
            group.parallelism = group.parallelism or group.task_count
            job.name, job.uid = name, f"{job_id[:40]}-{uuid.uuid4().hex[:8]}"
            job.create_time = job.update_time = _now()
            job.status = batch_v1.JobStatus(state=State.QUEUED)
            self._event(job, "Job state is set from QUEUED", State.QUEUED)
            tasks = [_Task(i) for i in range(group.task_count)]
            stored = self._jobs[name] = _Job(job, tasks, counts=collections.Counter(PENDING=len(tasks)))
            if request_id:
                self._request_ids[request_id] = name
            self.created.append(name)
        threading.Thread(target=self._run, args=(stored,), daemon=True, name=f"fake-batch {job_id}").start()
        return self._render(stored)

    def get_job(self, name: str) -> batch_v1.Job:
        self.calls["GetJob"] += 1
        return self._render(self._find(name))

    def list_jobs(self, parent: str, query: dict[str, str]) -> dict[str, Any]:
        self.calls["ListJobs"] += 1
        with self._lock:
            names = sorted(n for n in self._jobs if n.startswith(parent + "/jobs/"))
            page, token = _page(names, query)
            return {"jobs": [_json(self._render(self._jobs[n])) for n in page], **token}

    def cancel_job(self, name: str, how: str) -> dict[str, Any]:
        self.calls["CancelJob" if how == "cancel" else "DeleteJob"] += 1
        job = self._find(name)
        with self._lock:
            if job.job.status.state in (State.SUCCEEDED, State.FAILED, State.CANCELLED) and how == "cancel":
                raise ApiError(400, "FAILED_PRECONDITION", f"Job {name} is already in a final state")
            job.cancel = job.cancel if job.cancel == "delete" else how
            to = State.DELETION_IN_PROGRESS if how == "delete" else State.CANCELLATION_IN_PROGRESS
            self._set_state(job.job, to)
            for task in job.tasks:
                if task.container is not None:
                    _kill(task.container)
            if not any(t.container is not None for t in job.tasks):
                self._finish_cancel(job)
            self._changed.notify_all()
        response = "google.cloud.batch.v1.CancelJobResponse" if how == "cancel" else "google.protobuf.Empty"
        operation = f"{name.rsplit('/jobs/', 1)[0]}/operations/op-{uuid.uuid4().hex[:12]}"
        return {"name": operation, "done": True, "response": {"@type": f"type.googleapis.com/{response}"}}

    def list_tasks(self, group: str, query: dict[str, str]) -> dict[str, Any]:
        self.calls["ListTasks"] += 1
        job = self._find(group.rsplit("/taskGroups/", 1)[0])
        wanted = (query.get("filter") or "").strip()
        state: Any | None = None
        if wanted:
            key, _, value = wanted.partition("=")
            if key.strip().lower() != "state" or value.strip().upper() not in TaskState.__members__:
                raise ApiError(400, "INVALID_ARGUMENT", f"invalid task filter {wanted!r}")
            state = TaskState[value.strip().upper()]
        with self._lock:
            tasks = [t for t in job.tasks if state is None or t.state == state]
            page, token = _page(tasks, query)
            return {"tasks": [_json(self._task(group, t)) for t in page], **token}

    def get_task(self, group: str, index: int) -> batch_v1.Task:
        self.calls["GetTask"] += 1
        job = self._find(group.rsplit("/taskGroups/", 1)[0])
        if index >= len(job.tasks):
            raise ApiError(404, "NOT_FOUND", f"Task {group}/tasks/{index} not found")
        with self._lock:
            return self._task(group, job.tasks[index])

    def list_entries(self, body: dict[str, Any]) -> dict[str, Any]:
        """``entries:list``: the filter's ``a="b"`` (equal) and ``a:"b"`` (has) terms joined by AND."""
        self.calls["ListLogEntries"] += 1
        terms = [_term(t) for t in re.split(r"\s+AND\s+", body.get("filter") or "") if t.strip()]
        with self._lock:
            found = [e for e in self._entries if all(test(e) for test in terms)]
        if (body.get("orderBy") or "").endswith("desc"):
            found.reverse()
        page, token = _page(found, {"pageSize": str(body.get("pageSize") or 1000), "pageToken": body.get("pageToken", "")})
        return {"entries": page, **token}

    # -- running a job -----------------------------------------------------------------------------
    def _run(self, stored: _Job) -> None:
        """The job's scheduler: starts tasks, ``parallelism`` at a time, as others end; then ends the job."""
        job = stored.job
        policy = job.allocation_policy
        machine = policy.instances[0].policy.machine_type if policy.instances else ""
        time.sleep(0.05)
        if machine == NO_CAPACITY:
            with self._lock:
                self._event(job, QUOTA_EVENT.format(job=job.name), State.QUEUED)
            return  # QUEUED until cancelled or deleted
        with self._lock:
            if stored.cancelled():
                return
            self._set_state(job, State.SCHEDULED)
        parallelism = job.task_groups[0].parallelism
        pending = collections.deque(stored.tasks)
        with self._changed:
            while pending or stored.active:
                if stored.cancelled():
                    pending.clear()
                while pending and stored.active < parallelism:
                    task = pending.popleft()
                    stored.active += 1
                    self._start(stored, task)
                    if self.execute:
                        self._runs.put((stored, task))
                if not self.execute and (not pending or stored.cancelled()):
                    return  # tasks stay RUNNING
                if pending or stored.active:
                    self._changed.wait(1.0)
            if stored.cancelled():
                self._finish_cancel(stored)
                return
            failed = stored.counts["FAILED"] > 0
            self._set_state(job, State.FAILED if failed else State.SUCCEEDED)

    def _start(self, stored: _Job, task: _Task) -> None:
        """An attempt of ``task`` begins: ASSIGNED then RUNNING (and the job RUNNING with its first)."""
        self._task_state(stored, task, TaskState.ASSIGNED)
        self._task_state(stored, task, TaskState.RUNNING)
        if stored.job.status.state == State.SCHEDULED:
            stored.started = time.monotonic()
            self._set_state(stored.job, State.RUNNING)

    def _runner(self) -> None:
        """One of ``max_containers`` threads: runs the tasks the schedulers started, one at a time."""
        while True:
            stored, task = self._runs.get()
            try:
                self._run_task(stored, task)
            except Exception:  # a bug of the fake: say so, and let the job end
                logger.exception("fake Batch failed running task %d of %s", task.index, stored.job.name)
            finally:
                with self._changed:
                    stored.active -= 1
                    self._changed.notify_all()

    def _run_task(self, stored: _Job, task: _Task) -> None:
        """Every attempt of a started task, as its lifecycle policy and ``max_retry_count`` allow."""
        spec = stored.job.task_groups[0].task_spec
        while True:
            if stored.cancelled():
                return
            code = self._attempt(stored, task, spec)
            with self._lock:
                if stored.cancelled():
                    return
                if code == 0:
                    self._task_state(stored, task, TaskState.SUCCEEDED, code)
                    return
                if not _retries(spec, code, task.attempt):
                    self._task_state(stored, task, TaskState.FAILED, code)
                    return
                self._task_state(stored, task, TaskState.FAILED, code)
                self._task_state(stored, task, TaskState.PENDING)
                task.attempt += 1
                if stored.cancelled():
                    return
                self._start(stored, task)

    def _attempt(self, stored: _Job, task: _Task, spec: batch_v1.TaskSpec) -> int:
        """One run of the task's container runnable; its exit code (Batch's for a timeout or preemption)."""
        container = spec.runnables[0].container
        group = stored.job.task_groups[0]
        env = {**dict(spec.environment.variables), **dict(spec.runnables[0].environment.variables)}
        env.update(BATCH_TASK_INDEX=str(task.index), BATCH_TASK_COUNT=str(group.task_count),
                   BATCH_TASK_RETRY_ATTEMPT=str(task.attempt), BATCH_JOB_UID=stored.job.uid)
        limit = spec.max_run_duration.total_seconds() if spec.max_run_duration else None
        memory = spec.compute_resource.memory_mib
        # on one of the runner threads: max_containers containers at once
        with self._lock:
            if task.take_preempt():  # reclaimed before it started
                return PREEMPTED
        try:
            handle = self._engine().containers.run(
                container.image_uri, command=list(container.commands) or None,
                entrypoint=container.entrypoint or None, environment=env, network_mode="host",
                detach=True, mem_limit=f"{memory}m" if memory else None,
                memswap_limit=f"{memory}m" if memory else None, labels={"jobsub-fake-batch": stored.job.uid},
            )
        except Exception as exc:  # the image cannot be pulled, a bad command
            self._log(stored, task, f"cannot start the container: {exc}", "ERROR")
            return 50000
        with self._lock:
            task.container = handle
            preempt, cancelled = task.preempt, stored.cancelled()
        if preempt or cancelled:
            _kill(handle)
        started = time.monotonic()
        code, why = _wait(handle, lambda: limit is not None and time.monotonic() - started > limit)
        with self._lock:
            task.container = None
            preempted = task.take_preempt()
        for stream, severity in (("stdout", "INFO"), ("stderr", "ERROR")):
            text = handle.logs(stdout=stream == "stdout", stderr=stream == "stderr").decode(errors="replace")
            for line in text.splitlines():
                self._log(stored, task, line, severity)
        _remove(handle)
        if preempted:
            return PREEMPTED
        return MAX_RUN_DURATION if why == "timeout" else code

    def _engine(self) -> Any:
        if self._docker is None:
            import docker

            self._docker = docker.from_env()
        return self._docker

    # -- bookkeeping -------------------------------------------------------------------------------
    def _find(self, name: str) -> _Job:
        with self._lock:
            found = self._jobs.get(name)
        if found is None:
            raise ApiError(404, "NOT_FOUND", f"Job {name} not found")
        return found

    def _render(self, stored: _Job) -> batch_v1.Job:
        with self._lock:
            data = batch_v1.Job.serialize(stored.job)
            counts = {state: n for state, n in stored.counts.items() if n}
            started = stored.started
        job: batch_v1.Job = batch_v1.Job.deserialize(data)
        job.status.task_groups["group0"] = batch_v1.JobStatus.TaskGroupStatus(counts=counts)
        if started:
            job.status.run_duration = datetime.timedelta(seconds=time.monotonic() - started)
        return job

    def _task(self, group: str, task: _Task) -> batch_v1.Task:
        events = []
        for description, moment, state, code in task.events:
            event = batch_v1.StatusEvent(
                type_="STATUS_CHANGED", description=description, event_time=moment, task_state=state,
            )
            if code is not None:
                event.task_execution = batch_v1.TaskExecution(exit_code=code)
            events.append(event)
        status = batch_v1.TaskStatus(state=task.state, status_events=events)
        return batch_v1.Task(name=f"{group}/tasks/{task.index}", status=status)

    def _event(self, job: batch_v1.Job, description: str, state: Any) -> None:
        job.status.status_events.append(
            batch_v1.StatusEvent(type_="STATUS_CHANGED", description=description, event_time=_now())
        )
        job.update_time = _now()

    def _set_state(self, job: batch_v1.Job, to: Any) -> None:
        was = State(job.status.state).name
        job.status.state = to
        self._event(job, f"Job state is set from {was} to {to.name} for job {job.name}.", to)

    def _task_state(self, stored: _Job, task: _Task, to: Any, code: int | None = None) -> None:
        was, task.state = TaskState(task.state).name, to
        stored.counts[was] -= 1
        stored.counts[to.name] += 1
        description = f"Task state is updated from {was} to {to.name}"
        if code is not None and code != 0:
            description += f" with exit code {code}"
            if code == PREEMPTED:
                description += " (VM preemption)"
            if code == MAX_RUN_DURATION:
                description += " (task exceeded its max run duration)"
        task.events.append((description, _now(), to, code))

    def _finish_cancel(self, stored: _Job) -> None:
        with self._lock:
            for task in stored.tasks:
                if task.state in (TaskState.PENDING, TaskState.ASSIGNED, TaskState.RUNNING):
                    was, task.state = TaskState(task.state).name, (
                        TaskState.UNEXECUTED if task.state == TaskState.PENDING else TaskState.FAILED
                    )
                    stored.counts[was] -= 1
                    stored.counts[TaskState(task.state).name] += 1
            if stored.cancel == "delete":
                self._jobs.pop(stored.job.name, None)
            elif stored.job.status.state != State.CANCELLED:  # cancel_job may have finished it already
                self._set_state(stored.job, State.CANCELLED)

    def _log(self, stored: _Job, task: _Task, line: str, severity: str) -> None:
        project = stored.job.name.split("/")[1]
        entry = {
            "logName": f"projects/{project}/logs/batch_task_logs",
            "resource": {"type": "generic_task", "labels": {"project_id": project, "job": stored.job.uid}},
            "textPayload": line,
            "severity": severity,
            "timestamp": _rfc3339(_now()),
            "insertId": uuid.uuid4().hex,
            "labels": {
                "job_uid": stored.job.uid,
                "task_id": f"task/{stored.job.uid}-group0-{task.index}/{task.attempt}/0",
            },
        }
        with self._lock:
            self._entries.append(entry)


# -- validation as Batch does it -------------------------------------------------------------------
def _validate(job: batch_v1.Job) -> None:
    def bad(message: str) -> ApiError:
        return ApiError(400, "INVALID_ARGUMENT", message)

    if len(job.task_groups) != 1:
        raise bad(f"a job has exactly one task group, not {len(job.task_groups)}")
    group = job.task_groups[0]
    if not 0 <= group.task_count <= 100_000:
        raise bad(f"task_count {group.task_count} is outside [1, 100000]")
    if not 0 <= group.parallelism <= 5_000:
        raise bad(f"parallelism {group.parallelism} is outside [1, 5000]")
    spec = group.task_spec
    if not spec.runnables:
        raise bad("task_spec.runnables is required")
    for runnable in spec.runnables:
        if runnable.container and not runnable.container.image_uri:
            raise bad("runnables[].container.image_uri is required")
    if not 0 <= spec.max_retry_count <= 10:
        raise bad(f"max_retry_count {spec.max_retry_count} is outside [0, 10]")
    if len(spec.lifecycle_policies) > 1:
        raise bad("only one lifecycle policy is supported")
    for labels in (job.labels, job.allocation_policy.labels):
        for key, value in labels.items():
            if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value) or key.startswith(("goog-", "google-")):
                raise bad(f"invalid label {key!r}: {value!r}")
    for instance in job.allocation_policy.instances:
        for accelerator in instance.policy.accelerators:
            if not accelerator.type_ or accelerator.count <= 0:
                raise bad(f"invalid accelerator {accelerator.type_!r} x {accelerator.count}")


def _retries(spec: batch_v1.TaskSpec, code: int, attempt: int) -> bool:
    """Whether a failed attempt runs again: the lifecycle policy decides, within ``max_retry_count``."""
    if attempt >= spec.max_retry_count:
        return False
    for policy in spec.lifecycle_policies:
        matched = code in policy.action_condition.exit_codes
        if policy.action == batch_v1.LifecyclePolicy.Action.RETRY_TASK:
            return matched
        if policy.action == batch_v1.LifecyclePolicy.Action.FAIL_TASK:
            return not matched
    return True


# -- helpers ---------------------------------------------------------------------------------------
def _wait(handle: Any, over_time: Callable[[], bool]) -> tuple[int, str]:
    while True:
        try:
            return int(handle.wait(timeout=0.25)["StatusCode"]), "exited"
        except Exception:  # requests' ReadTimeout / ConnectionError: still running
            if over_time():
                _kill(handle)
                handle.wait(timeout=30)
                return MAX_RUN_DURATION, "timeout"


def _kill(handle: Any) -> None:
    with contextlib.suppress(Exception):  # already gone
        handle.kill()


def _remove(handle: Any) -> None:
    with contextlib.suppress(Exception):
        handle.remove(force=True)


def _page(items: list[Any], query: dict[str, str]) -> tuple[list[Any], dict[str, str]]:
    size = int(query.get("pageSize") or query.get("page_size") or 100)
    start = int(query.get("pageToken") or query.get("page_token") or 0)
    page = items[start : start + size]
    return page, ({"nextPageToken": str(start + size)} if start + size < len(items) else {})


def _term(text: str) -> Callable[[dict[str, Any]], bool]:
    """One term of a Logging filter: ``a="b"`` (equal), ``a:"b"`` (has), ``timestamp>="..."`` (from)."""
    match = re.fullmatch(r'\s*([\w.]+)\s*(>=|<=|=|:)\s*"?([^"]*)"?\s*', text)
    if match is None:
        raise ApiError(400, "INVALID_ARGUMENT", f"unsupported filter term {text!r}")
    path, operator, wanted = match.groups()

    def test(entry: dict[str, Any]) -> bool:
        value: Any = entry
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if operator in (">=", "<="):
            have, bound = datetime.datetime.fromisoformat(str(value)), datetime.datetime.fromisoformat(wanted)
            return have >= bound if operator == ">=" else have <= bound
        return bool(value == wanted) if operator == "=" else wanted in str(value or "")

    return test


def _json(message: Any) -> Any:
    return json.loads(type(message).to_json(message))


def _handler(fake: FakeBatch) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = urllib.parse.urlsplit(self.path)
            path = urllib.parse.unquote(parts.path)
            query = {k: v[-1] for k, v in urllib.parse.parse_qs(parts.query).items()}
            try:
                self._answer(200, self._dispatch(self.command, path, query, body))
            except ApiError as exc:
                self._answer(exc.code, {"error": {"code": exc.code, "message": exc.message, "status": exc.status}})
            except Exception as exc:  # a bug of the fake: say so
                logger.exception("fake Batch failed on %s %s", self.command, self.path)
                self._answer(500, {"error": {"code": 500, "message": repr(exc), "status": "INTERNAL"}})

        def _dispatch(self, method: str, path: str, query: dict[str, str], body: bytes) -> Any:
            if method == "POST" and path == "/v2/entries:list":
                return fake.list_entries(json.loads(body or b"{}"))
            if method == "POST" and path == "/fake/preempt":
                request = json.loads(body)
                return {"preempted": fake.preempt(request["job"], int(request["index"]))}
            if method == "GET" and path == "/fake/calls":
                return dict(fake.calls)
            tasks = _TASKS_PATH.match(path)
            if tasks and method == "GET":
                group, index = tasks.groups()
                return _json(fake.get_task(group, int(index))) if index else fake.list_tasks(group, query)
            jobs = _JOB_PATH.match(path)
            if jobs is None:
                raise ApiError(404, "NOT_FOUND", f"no route {method} {path}")
            parent, job_id, cancel = jobs.groups()
            name = f"{parent}/jobs/{job_id}"
            if method == "POST" and cancel and job_id:
                return fake.cancel_job(name, "cancel")
            if method == "POST" and not job_id:
                return _json(fake.create_job(parent, query, body))
            if method == "GET" and job_id:
                return _json(fake.get_job(name))
            if method == "GET":
                return fake.list_jobs(parent, query)
            if method == "DELETE" and job_id:
                return fake.cancel_job(name, "delete")
            raise ApiError(404, "NOT_FOUND", f"no route {method} {path}")

        do_GET = do_POST = do_DELETE = _route

    return Handler

