"""The AWS Batch backend against moto's server, which runs Batch jobs as real containers.

Needs ``eval "$(scripts/start-moto.sh)"`` (after scripts/start-docker.sh, so
that moto runs jobs on the engine) and ``JOBSUB_CLOUD_TEST_IMAGE`` from
scripts/build-cloud-test-image.sh; skipped, naming them, otherwise.  boto3 is
never mocked: faults are injected at the HTTP level (botocore's
``before-send`` event), where a real network would make them.
"""

from __future__ import annotations

import json
import operator
import os
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jobsub
from jobsub import JobState
from jobsub.folder import JobFolder, register_id
from jobsub.submission import launch_for, new_meta, start
from tests import aws_batch_env, tasks
from tests.aws_batch_env import BUCKET, QUEUE, client
from tests.conformance.behaviour import BackendSuite
from tests.conformance.fixtures import BucketCloudFixtures
from tests.conftest import wait_until

pytestmark = pytest.mark.aws


@pytest.fixture(scope="session")
def aws() -> dict[str, str]:
    """Compute environment, job queue, role and bucket in moto; a probe job proved containers run."""
    problem = aws_batch_env.problem()
    if problem:
        pytest.skip(problem)
    return {"queue": QUEUE, "image": os.environ["JOBSUB_CLOUD_TEST_IMAGE"]}


def _moto_config(batch: dict[str, Any]) -> None:
    body = json.dumps({"batch": batch}).encode()
    request = urllib.request.Request(os.environ["AWS_ENDPOINT_URL"] + "/moto-api/config", data=body, method="POST")
    urllib.request.urlopen(request, timeout=10).read()


@pytest.fixture
def root() -> str:
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def ex(aws: dict[str, str], root: str, monkeypatch: pytest.MonkeyPatch) -> jobsub.AutoExecutor:
    monkeypatch.setenv("JOBSUB_POLL_INTERVAL", "0.5")
    executor = jobsub.AutoExecutor(folder=f"{root}/%j", cluster="aws_batch")
    # auto_array (on by default here) sends a submit up to a second later: these tests look at
    # each submission at once (test_separate_submits_are_one_array_by_default: the default)
    executor.update_parameters(aws_batch_job_queue=aws["queue"], aws_batch_image=aws["image"], auto_array=False)
    return executor


class TestAWSBatchBehaviour(BucketCloudFixtures, BackendSuite):
    """The shared suites, with folders on S3 and jobs run by moto."""

    cluster = "aws_batch"
    probe = aws_batch_env
    bucket = f"s3://{BUCKET}"
    local_folder = False  # the folders are in a bucket
    live_logs = False  # AWS streams a task's output to CloudWatch; moto sends it when the task ends
    fast_time_limits = False  # AWS's shortest limit is 60 s: test_timeout below runs one
    memory_limit = False  # AWS kills a job over its MEMORY; moto does not pass the limit to Docker


def _own_backend(aws: dict[str, str], root: str, auto_array: bool | None = False) -> tuple[Any, jobsub.Executor]:
    """A backend instance of the test's own (not shared): its call counts and hooks are the test's.
    ``auto_array``: off, so that each submit is sent at once (None: the backend's default)."""
    from jobsub.backends.aws_batch import AWSBatchBackend

    backend = AWSBatchBackend(root)
    return backend, jobsub.Executor(root, backend=backend, job_queue=aws["queue"], image=aws["image"], auto_array=auto_array)


def _aws_state(job: jobsub.Job[Any]) -> JobState:
    return job.backend_instance.states([job.job_id])[job.job_id].state


def test_submit_and_result(ex: jobsub.AutoExecutor) -> None:
    def where() -> tuple[str, str, str, str]:
        import jobsub

        env = os.environ
        return env["JOBSUB_BACKEND"], env["JOBSUB_ARRAY_TASK_ID"], env["JOBSUB_FOLDER"], jobsub.__file__ or ""

    job = ex.submit(where)
    backend, index, folder, code = job.result(timeout=120)
    assert (backend, index, folder) == ("aws_batch", "0", job.folder.url)
    assert code.startswith("/tmp/jobsub-code/")  # the code package, fetched from the bucket
    assert job.folder.url.startswith("s3://")
    assert job.state == "COMPLETED"


def test_a_code_package_replaced_in_the_bucket_never_runs(ex: jobsub.AutoExecutor) -> None:
    """Someone with write access to the bucket replaces the code package with one whose
    ``tests/tasks.py`` returns 666: the task's bootstrap checks the package's sha256 (which came
    with the task's command, not from the bucket) and refuses it; nothing of it runs."""
    import io
    import tarfile

    first = ex.submit(tasks.add, 1, 2)
    assert first.result(timeout=120) == 3
    root = first.folder.storage  # the executor's folder: the package is kept next to the job folders
    (key,) = [k for k in root.list(".code") if k.endswith(".tar.gz")]
    forged = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(root.read_bytes(key)), mode="r:gz") as original, \
            tarfile.open(fileobj=forged, mode="w:gz") as out:
        for member in original.getmembers():
            data = original.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            if member.name == "tests/tasks.py":
                data += b"\n\ndef add(a, b):\n    return 666\n"
                member.size = len(data)
            out.addfile(member, io.BytesIO(data))
    root.write_bytes(key, forged.getvalue())
    second = ex.submit(tasks.add, 1, 2)
    with pytest.raises(jobsub.JobError) as info:
        second.result(timeout=120)
    assert "is not the one submitted" in str(info.value) + (second.stderr() or "") + (second.stdout() or "")


def test_array_is_one_submit_job_and_indexes_come_from_the_job_id(aws: dict[str, str], root: str) -> None:
    backend, executor = _own_backend(aws, root)
    jobs = executor.map_array(lambda x: (x * x, os.environ["JOBSUB_ARRAY_TASK_ID"]), range(5))
    assert [j.result(timeout=180) for j in jobs] == [(x * x, str(x)) for x in range(5)]
    assert backend.api.counts["SubmitJob"] == 1
    parent = jobs[0].job_id.partition("_")[0]
    described = client("batch").describe_jobs(jobs=[parent])["jobs"][0]
    assert described["arrayProperties"]["size"] == 5
    # the command is in the definition; the submission carries the folder URL and an offset
    assert set(described["parameters"]) >= {"jobsub_folder", "jobsub_offset"}


def test_failure_carries_remote_traceback(ex: jobsub.AutoExecutor) -> None:
    def fails() -> None:
        raise ValueError("broken on purpose")

    job = ex.submit(fails)
    with pytest.raises(jobsub.FailedJobError) as info:
        job.result(timeout=120)
    assert "broken on purpose" in str(info.value) and "in fails" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)


def test_jobs_as_arguments_are_dependencies(ex: jobsub.AutoExecutor) -> None:
    first = ex.submit(abs, -3)
    second = ex.submit(operator.add, first, 1)  # waits for first: AWS holds it in PENDING (dependsOn)
    assert second.result(timeout=180) == 4
    described = client("batch").describe_jobs(jobs=[second.job_id])["jobs"][0]
    assert described["dependsOn"] == [{"jobId": first.job_id}]


def test_a_failed_dependency_cancels_the_dependent(ex: jobsub.AutoExecutor) -> None:
    def fails() -> int:
        raise RuntimeError("upstream")

    broken = ex.submit(fails)
    orphan = ex.submit(abs, broken)
    with pytest.raises(jobsub.JobCancelledError, match="dependency failed"):
        orphan.result(timeout=180)
    assert orphan.state == "CANCELLED"


def test_separate_submits_are_one_array_by_default(aws: dict[str, str], root: str) -> None:
    """auto_array is on by default on AWS Batch: a loop of submits costs one SubmitJob."""
    backend, executor = _own_backend(aws, root, auto_array=None)
    jobs = [executor.submit(abs, -i) for i in range(5)]
    assert [j.result(timeout=180) for j in jobs] == list(range(5))
    assert backend.api.counts["SubmitJob"] == 1
    assert len({j.job_id.partition("_")[0] for j in jobs}) == 1


def test_a_missing_queue_is_refused_by_submit_not_by_a_later_result(aws: dict[str, str], root: str) -> None:
    """auto_array is on by default here: a missing queue raises at submit, before any coalescing."""
    executor = jobsub.AutoExecutor(folder=f"{root}/%j", cluster="aws_batch")
    executor.update_parameters(aws_batch_image=aws["image"])
    with pytest.raises(jobsub.InvalidParameterError, match=r"aws_batch_job_queue="):
        executor.submit(abs, 1)
    with pytest.raises(jobsub.InvalidParameterError, match=r"aws_batch_job_queue="):
        executor.map_array(abs, [1, 2])


def test_an_array_over_the_tasks_of_an_array_waits_pairwise(ex: jobsub.AutoExecutor) -> None:
    """map_array over an array's jobs, task i taking task i: ONE dependsOn of type N_TO_N (AWS
    starts child i once child i of the other succeeded), not a submission held by jobsub."""
    first = ex.map_array(operator.mul, [1, 2, 3], [10, 10, 10])
    second = ex.map_array(operator.add, first, [1, 1, 1])
    assert [j.result(timeout=180) for j in second] == [11, 21, 31]
    parent, first_parent = second[0].job_id.partition("_")[0], first[0].job_id.partition("_")[0]
    described = client("batch").describe_jobs(jobs=[parent])["jobs"][0]
    assert described["dependsOn"] == [{"jobId": first_parent, "type": "N_TO_N"}]
    shuffled = ex.map_array(operator.add, [first[1], first[0], first[2]], [1, 1, 1])  # not pairwise: held
    assert [j.result(timeout=180) for j in shuffled] == [21, 11, 31]


def test_a_child_of_an_array_is_waited_for_by_jobsub_not_in_a_paid_task(ex: jobsub.AutoExecutor) -> None:
    """dependsOn on an array would fail the dependent when a sibling fails: jobsub holds it
    (HELD, no dependsOn) and submits it once the child it takes succeeded."""
    children = ex.map_array(abs, [-1, -2])
    second = ex.submit(operator.add, children[1], 1)
    assert second.state in ("HELD", "PENDING", "RUNNING", "COMPLETED")
    assert second.result(timeout=180) == 3
    described = client("batch").describe_jobs(jobs=[second.job_id])["jobs"][0]
    assert described.get("dependsOn", []) == []


def test_over_twenty_upstreams_are_held_by_jobsub(ex: jobsub.AutoExecutor) -> None:
    """SubmitJob takes at most 20 dependsOn: more, and jobsub holds the submission instead."""
    ups = [ex.submit(time.sleep, 3) for _ in range(21)]  # plain jobs: the fixture turns auto_array off
    assert len({u.job_id for u in ups}) == 21 and all("_" not in u.job_id for u in ups)
    total = ex.submit(lambda results: len(results), ups)
    assert total.state == "HELD"
    assert total.result(timeout=240) == 21
    described = client("batch").describe_jobs(jobs=[total.job_id])["jobs"][0]
    assert len(described.get("dependsOn", [])) <= 20  # released once at most 20 were still running


def test_an_upstream_on_this_machines_disk_is_refused(ex: jobsub.AutoExecutor, tmp_path: Path) -> None:
    """A task in the cloud cannot read a result on the client's disk: a clear error, nothing submitted."""
    local = jobsub.AutoExecutor(tmp_path / "here", cluster="debug").submit(abs, -1)
    with pytest.raises(jobsub.InvalidParameterError, match="on this machine's disk"):
        ex.submit(operator.add, local, 1)


def test_a_reclaimed_checkpointable_task_resumes_from_its_checkpoint(ex: jobsub.AutoExecutor) -> None:
    """A Spot reclamation reaches the task as SIGTERM (ECS stops its container): a checkpointable
    callable checkpoints and exits for AWS's retry (``Host EC2*`` -> RETRY), which resumes from
    the checkpoint.  moto neither reclaims nor retries: the test sends SIGTERM to the job's
    container as ECS would, and makes the retry by submitting the same task again, as AWS runs it."""
    import docker

    job = ex.submit(tasks.SlowCounter(), 600)
    wait_until(lambda: job.state == "RUNNING", 120, every=0.2)
    engine = docker.from_env()
    try:
        def reclaim() -> bool:  # until the worker's handler is in place (PID 1 ignores it before)
            for container in engine.containers.list():
                if f"AWS_BATCH_JOB_ID={job.job_id}" in (container.attrs["Config"].get("Env") or []):
                    container.kill(signal="SIGTERM")
            time.sleep(1)
            return job.folder.read_checkpoint(0) is not None

        wait_until(reclaim, 90, every=0.2)
    finally:
        engine.close()
    params = ex._resolve()
    retry_id = ex.backend.submit(launch_for(ex.backend, job.folder, 0, params), 1, params, job.folder, array=False)
    retried = jobsub.Job.bind(ex.backend, job.folder, retry_id, 0, 1)
    assert retried.result(timeout=180) == 2  # the second call of the checkpointed counter


def test_a_task_that_cannot_checkpoint_stops_at_sigterm(ex: jobsub.AutoExecutor) -> None:
    """SIGTERM is the preemption signal on AWS: a plain function is not kept running by it
    (as PID 1 of its container it would otherwise ignore it until ECS's SIGKILL)."""
    import docker

    job = ex.submit(time.sleep, 600)
    wait_until(lambda: job.state == "RUNNING", 120, every=0.2)
    engine = docker.from_env()
    try:
        signalled: list[str] = []

        def stopped() -> bool:  # signalled once, and its container gone since
            for container in engine.containers.list():
                if f"AWS_BATCH_JOB_ID={job.job_id}" in (container.attrs["Config"].get("Env") or []):
                    if not signalled:
                        time.sleep(3)  # the worker's handler in place
                        container.kill(signal="SIGTERM")
                        signalled.append(container.id)
                    return False
            return bool(signalled)

        wait_until(stopped, 60, every=0.2)  # well before ECS's SIGKILL would come (30 s after SIGTERM)
    finally:
        engine.close()
    with pytest.raises(jobsub.JobError):
        job.result(timeout=60)


def test_debug_runs_the_tasks_here_with_the_same_image_command_and_folder(aws: dict[str, str], root: str) -> None:
    """aws_batch_debug=True: each task runs attached on this machine's engine before submit returns,
    reading and writing the same bucket folder; nothing reaches AWS Batch."""
    backend, executor = _own_backend(aws, root)
    executor.update_parameters(debug=True)
    job = executor.submit(tasks.add, 2, 3)
    assert job.job_id.startswith("here-") and job.done()
    assert job.result() == 5
    jobs = executor.map_array(tasks.add, [1, 2], [10, 20])
    assert [j.result() for j in jobs] == [11, 22]
    parent = jobs[0].job_id.partition("_")[0]
    assert [j.job_id for j in jobs] == [f"{parent}_0", f"{parent}_1"]
    failing = executor.submit(tasks.fail, "broken here")
    with pytest.raises(jobsub.FailedJobError, match="broken here"):
        failing.result()
    assert "broken here" in (failing.stderr() or "")
    assert not failing.cancel()
    assert backend.api.counts.get("SubmitJob", 0) == 0


def test_debug_honours_timeout_min(aws: dict[str, str], root: str) -> None:
    """The attached run stops a task at ``timeout_min`` (issue 26: it used to run on past it)."""
    backend, executor = _own_backend(aws, root)
    executor.update_parameters(debug=True, timeout_min=0.05)
    started = time.monotonic()
    job = executor.submit(time.sleep, 60)
    assert time.monotonic() - started < 45 and job.job_id.startswith("here-")
    with pytest.raises(jobsub.JobTimeoutError, match="timeout_min"):
        job.result()
    assert backend.api.counts.get("SubmitJob", 0) == 0


def test_cancel_a_job_and_an_array_child(ex: jobsub.AutoExecutor) -> None:
    job = ex.submit(time.sleep, 120)
    jobs = ex.map_array(time.sleep, [0.1, 120])
    wait_until(lambda: job.state == "RUNNING" and jobs[1].state == "RUNNING", 60, every=0.2)
    assert job.cancel() and jobs[1].cancel()
    with pytest.raises(jobsub.JobCancelledError, match="cancelled by the user"):
        job.result(timeout=60)
    with pytest.raises(jobsub.JobCancelledError):
        jobs[1].result(timeout=60)
    assert jobs[0].result(timeout=60) is None


def test_timeout(ex: jobsub.AutoExecutor, caplog: pytest.LogCaptureFixture) -> None:
    ex.update_parameters(timeout_min=0.5)  # AWS's minimum is 60 s: raised to it, saying so
    job = ex.submit(time.sleep, 300)
    assert "shortest attempt duration is 60 s" in caplog.text
    with pytest.raises(jobsub.JobTimeoutError, match="time limit of 60 s"):
        job.result(timeout=150)
    assert job.state == "TIMEOUT"


def test_logs_come_from_cloudwatch(ex: jobsub.AutoExecutor) -> None:
    def chatty() -> int:
        print("hello from the task")
        print("and to stderr", file=sys.stderr)
        return 3

    job = ex.submit(chatty)
    assert job.result(timeout=120) == 3
    wait_until(lambda: _aws_state(job) is JobState.COMPLETED, 60, every=0.2)  # moto ships the logs as the job ends
    out = job.stdout()
    assert out is not None and "hello from the task" in out and "and to stderr" in out
    described = client("batch").describe_jobs(jobs=[job.job_id])["jobs"][0]
    stream = described["container"]["logStreamName"]
    events = client("logs").get_log_events(logGroupName="/aws/batch/job", logStreamName=stream)["events"]
    assert any("hello from the task" in e["message"] for e in events)


REATTACH = """
import sys, jobsub
job = jobsub.Job(sys.argv[1], sys.argv[2])
print(job.result(timeout=120), job.state)
"""


def test_reattach_from_a_new_process(ex: jobsub.AutoExecutor, root: str) -> None:
    job = ex.submit(sum, [1, 2, 3])
    done = subprocess.run(
        [sys.executable, "-c", REATTACH, f"{root}/%j", job.job_id], capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["6", "COMPLETED"]
    assert jobsub.Job.attach(job.folder.url)[0].result() == 6


def test_the_command_line_tool_on_an_s3_folder(ex: jobsub.AutoExecutor, root: str, capsys: pytest.CaptureFixture[str]) -> None:
    from jobsub.cli import main

    done = ex.submit(print, "printed by the task")
    slow = ex.submit(time.sleep, 120)
    assert done.result(timeout=120) is None
    wait_until(lambda: _aws_state(done) is JobState.COMPLETED, 60, every=0.2)
    assert main(["cancel", f"{root}/%j", slow.job_id]) == 0
    wait_until(lambda: _aws_state(slow) is JobState.CANCELLED, 60, every=0.2)  # TerminateJob takes a moment
    assert main(["logs", root, done.job_id]) == 0
    assert "printed by the task" in capsys.readouterr().out
    # from a shell, as a user would: this process's poller may still hold the state it saw at the
    # cancel (RUNNING: TerminateJob takes a moment) for its poll interval
    status = subprocess.run(
        [sys.executable, "-m", "jobsub.cli", "status", f"{root}/%j"], capture_output=True, text=True, timeout=120,
    )
    assert status.returncode == 3, status.stderr  # a task ended other than COMPLETED (cancelled)
    lines = status.stdout.splitlines()
    assert any(done.job_id in line and "aws_batch" in line and "COMPLETED" in line for line in lines), lines
    assert any(slow.job_id in line and "CANCELLED" in line for line in lines), lines


def test_one_job_definition_per_shape(aws: dict[str, str], root: str) -> None:
    backend, executor = _own_backend(aws, root)
    memory = 0.25 + uuid.uuid4().int % 1000 / 4096  # a shape no other test used
    executor.update_parameters(mem_gb=memory)
    first, second = executor.submit(abs, -1), executor.submit(abs, -2)
    assert (first.result(timeout=120), second.result(timeout=120)) == (1, 2)
    assert backend.api.counts["RegisterJobDefinition"] == 1
    assert backend.api.counts["DescribeJobDefinitions"] == 1
    names = {client("batch").describe_jobs(jobs=[j.job_id])["jobs"][0]["jobDefinition"] for j in (first, second)}
    assert len(names) == 1 and "jobsub-" in names.pop()
    # another process (here a fresh backend) finds the definition instead of registering one
    other, executor = _own_backend(aws, root)
    executor.update_parameters(mem_gb=memory)
    assert executor.submit(abs, -3).result(timeout=120) == 3
    assert other.api.counts["RegisterJobDefinition"] == 0


def test_an_existing_job_definition_is_used_as_it_is(aws: dict[str, str], root: str) -> None:
    client("batch").register_job_definition(
        jobDefinitionName="jobsub-test-users-own", type="container",
        containerProperties={"image": aws["image"], "command": ["false"], "vcpus": 1, "memory": 256},
    )
    backend, executor = _own_backend(aws, root)
    executor.update_parameters(image="", job_definition="jobsub-test-users-own", cpus_per_task=1)
    job = executor.submit(abs, -9)
    assert job.result(timeout=120) == 9
    assert backend.api.counts["RegisterJobDefinition"] == 0
    described = client("batch").describe_jobs(jobs=[job.job_id])["jobs"][0]
    assert "jobsub-test-users-own" in described["jobDefinition"]
    command = described["container"]["command"]  # the definition's "false", overridden by the worker's
    assert command[0] == "python3" and "jobsub.worker" in command


def test_overrides_over_8192_characters_are_refused_before_submitting(aws: dict[str, str], root: str) -> None:
    backend, executor = _own_backend(aws, root)
    executor.update_parameters(env={"BIG": "x" * 9000})
    with pytest.raises(jobsub.SubmissionError, match="over AWS's limit of 8192.*BIG"):
        executor.submit(abs, 1)
    assert backend.api.counts["SubmitJob"] == 0 and backend.api.counts["RegisterJobDefinition"] == 0
    assert [k for k in backend.storage.list("") if not k.startswith(".")] == []  # the folder is removed


def test_a_missing_image_is_named_in_the_error(ex: jobsub.AutoExecutor) -> None:
    ex.update_parameters(aws_batch_image="jobsub-no-such-image:0")
    job = ex.submit(abs, 1)
    with pytest.raises(jobsub.JobError, match="image jobsub-no-such-image:0"):
        job.result(timeout=120)
    assert job.state == "FAILED"


def test_a_missing_queue_is_a_submission_error(ex: jobsub.AutoExecutor) -> None:
    ex.update_parameters(aws_batch_job_queue="no-such-queue")
    with pytest.raises(jobsub.SubmissionError, match="no-such-queue"):
        ex.submit(abs, 1)


def test_credentials_never_travel_in_the_environment(ex: jobsub.AutoExecutor) -> None:
    ex.update_parameters(env={"AWS_SECRET_ACCESS_KEY": "nope"})
    with pytest.raises(jobsub.InvalidParameterError, match="give the job a role"):
        ex.submit(abs, 1)


def test_a_job_aws_forgot_is_judged_by_its_folder(ex: jobsub.AutoExecutor, root: str) -> None:
    job = ex.submit(abs, -7)
    assert job.result(timeout=120) == 7
    meta = job.folder.read_meta()
    forgotten = str(uuid.uuid4())  # an id DescribeJobs does not know, as AWS forgets old jobs
    meta["submissions"] = [{"id": forgotten, "offset": 0, "count": 1, "submitted_at": time.time() - 3600}]
    job.folder.write_meta(meta)
    register_id(job.folder.storage, forgotten, job.folder.key)
    assert jobsub.Job(root, forgotten).result(timeout=30) == 7  # done: its result is there
    empty = JobFolder.create(job.folder.storage)
    lost = str(uuid.uuid4())
    meta["submissions"] = [{"id": lost, "offset": 0, "count": 1, "submitted_at": time.time() - 3600}]
    empty.write_meta(meta)
    register_id(empty.storage, lost, empty.key)
    handle: jobsub.Job[Any] = jobsub.Job(root, lost)
    with pytest.raises(jobsub.JobLostError, match="no longer lists job .* left no result"):
        handle.result(timeout=30)
    assert handle.state == "LOST"


def test_stuck_runnable_is_cancelled_with_the_reason(ex: jobsub.AutoExecutor) -> None:
    ex.update_parameters(aws_batch_runnable_timeout_min=0.02)
    # each state lasts 8 s: RUNNABLE long enough to be seen twice 1.2 s apart on a loaded machine
    _state_manager("set-transition", {"model_name": "batch::job", "transition": {"progression": "time", "seconds": 8}})
    try:
        job = ex.submit(abs, 1)
        with pytest.raises(jobsub.JobCancelledError, match="RUNNABLE for over 0.02 min"):
            job.result(timeout=60)
    finally:
        _state_manager("unset-transition", {"model_name": "batch::job"})


def _state_manager(action: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        os.environ["AWS_ENDPOINT_URL"] + f"/moto-api/state-manager/{action}", data=json.dumps(body).encode(),
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).read()


# -- faults at the HTTP level ---------------------------------------------------------------------
class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def _answer(request: Any, status: int, code: str, message: str) -> Any:
    from botocore.awsrequest import AWSResponse

    headers = {"x-amzn-ErrorType": code, "Content-Type": "application/json"}
    return AWSResponse(request.url, status, headers, _Body(json.dumps({"message": message}).encode()))


def test_throttling_and_lost_answers_end_in_results_without_duplicates(aws: dict[str, str], root: str) -> None:
    import urllib3

    backend, executor = _own_backend(aws, root)
    events = backend.api.client("batch").meta.events
    faults: dict[str, list[str]] = {"SubmitJob": ["throttle", "lost"], "DescribeJobs": ["unavailable"]}

    def inject(request: Any, **kwargs: Any) -> Any:
        operation = kwargs["event_name"].rpartition(".")[2]
        fault = faults.get(operation, []).pop(0) if faults.get(operation) else None
        if fault == "throttle":  # refused: nothing was created
            return _answer(request, 429, "TooManyRequestsException", "Too Many Requests")
        if fault == "lost":  # AWS created the job, the answer never came back
            urllib3.PoolManager().request(request.method, request.url, body=request.body, headers=dict(request.headers))
            return _answer(request, 503, "ServiceUnavailableException", "try again")
        if fault == "unavailable":
            return _answer(request, 503, "ServiceUnavailableException", "try again")
        return None

    events.register("before-send.batch.*", inject)
    job = executor.submit(abs, -5)
    assert job.result(timeout=120) == 5
    calls = backend.api.counts["DescribeJobs"]
    faults["DescribeJobs"] = ["unavailable"]  # the result may have come before any poll: one more
    assert backend.states([job.job_id])[job.job_id].state in (JobState.RUNNING, JobState.COMPLETED)
    assert backend.api.counts["DescribeJobs"] == calls + 2  # a 503, then the answer
    assert not faults["SubmitJob"] and not faults["DescribeJobs"]
    assert backend.api.counts["SubmitJob"] == 2  # throttled, then lost and found by ListJobs: not sent again
    name = client("batch").describe_jobs(jobs=[job.job_id])["jobs"][0]["jobName"]
    listed = client("batch").list_jobs(jobQueue=aws["queue"], filters=[{"name": "JOB_NAME", "values": [name]}])
    assert [j["jobId"] for j in listed["jobSummaryList"]] == [job.job_id]


@pytest.mark.parametrize("age_s", [1000.0, 1.0])
def test_a_submission_whose_client_died_is_found_by_its_tag(
    ex: jobsub.AutoExecutor, age_s: float, caplog: pytest.LogCaptureFixture
) -> None:
    """The executor records its intent first; a client killed before recording the answer leaves
    only that, and whoever attaches asks the backend (ListJobs by name) instead of losing the job.
    Only an old intent is called a dead client's: a young one is a healthy client recording it
    (concurrent cached calls reattach to each other's submissions in that moment)."""
    job = ex.submit(abs, -4)
    assert job.result(timeout=120) == 4
    meta = job.folder.read_meta()
    intent = {"offset": 0, "count": 1, "tag": f"{job.folder.key}-0", "at": time.time() - age_s}
    meta["intents"], meta["submissions"] = [intent], []
    job.folder.write_meta(meta)
    with caplog.at_level("DEBUG", logger="jobsub"):
        (again,) = jobsub.Job.attach(job.folder.url)
    assert again.job_id == job.job_id and again.result(timeout=30) == 4
    assert "intents" not in job.folder.read_meta()
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "client died" in r.getMessage()]
    assert len(warned) == (1 if age_s > 300 else 0), warned


def test_find_submitted_by_the_submission_tag(ex: jobsub.AutoExecutor) -> None:
    job = ex.submit(abs, -1)
    launch = launch_for(ex.backend, job.folder, 0, ex._resolve())
    assert ex.backend.find_submitted(launch, job.folder) == job.job_id
    assert job.result(timeout=120) == 1


def test_arrays_of_ten_thousand_are_one_submit_job_and_polled_by_their_parent(aws: dict[str, str], root: str) -> None:
    """moto's tier without containers (jobs "succeed" at submit): only the calls are looked at.

    The executor's own split is used as ``map_array`` uses it, without writing
    10,001 argument files first (benchmarks/aws_batch.py times that part).
    """
    backend, executor = _own_backend(aws, root)
    sizes: list[int] = []
    backend.api.client("batch").meta.events.register(
        "before-parameter-build.batch.DescribeJobs", lambda params, **_: sizes.append(len(params["jobs"])),
    )
    folder = JobFolder.create(backend.storage)
    params = executor._resolve()
    _moto_config({"use_docker": False})
    try:
        meta = start(backend, folder, params, new_meta(backend, params, 10_001, 1, array=True))
    finally:
        _moto_config({"use_docker": True})
    parts = meta["submissions"]
    assert [(p["offset"], p["count"]) for p in parts] == [(0, 10_000), (10_000, 1)]
    assert backend.api.counts["SubmitJob"] == 2
    described = {j["jobId"]: j for j in client("batch").describe_jobs(jobs=[p["id"] for p in parts])["jobs"]}
    assert described[parts[0]["id"]]["arrayProperties"]["size"] == 10_000
    assert "arrayProperties" not in described[parts[1]["id"]]  # one task is a plain job
    assert described[parts[1]["id"]]["parameters"]["jobsub_offset"] == "10000"
    ids = [f"{parts[0]['id']}_{i}" for i in range(10_000)] + [f"{parts[1]['id']}_0"]
    states = backend.states(ids)
    assert len(states) == 10_001 and {s.state for s in states.values()} == {JobState.COMPLETED}
    assert sizes == [2]  # the parents, in one DescribeJobs, whatever the number of tasks
    backend.states([str(uuid.uuid4()) for _ in range(250)])
    assert sizes[1:] == [100, 100, 50]


def test_a_refused_automatic_array_fails_the_program(aws: dict[str, str], root: str, tmp_path: Path) -> None:
    """A script that submits with auto_array (AWS Batch's default) to a queue that does not exist
    and never waits: the refusal, logged by the flush, fails the program at exit (status 1).
    Real: moto's Batch API refusing the SubmitJob; the script runs in its own interpreter."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import jobsub
        ex = jobsub.AutoExecutor({root!r}, cluster="aws_batch")
        ex.update_parameters(aws_batch_job_queue="jobsub-no-such-queue", aws_batch_image={aws["image"]!r})
        jobs = [ex.submit(abs, -i) for i in range(3)]
        print("submitted, not waiting")
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "submitted, not waiting" in out.stdout
    assert "never submitted" in out.stderr and "jobsub-no-such-queue" in out.stderr, out.stderr
