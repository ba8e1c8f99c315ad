"""The AWS Batch backend's pure parts, on AWS-shaped data: requests, names, states, reasons.

No server: these pin what the backend sends (a golden file of the job
definition and SubmitJob request) and how it reads what AWS answers
(descriptions and listings as the AWS Batch API documents them, including
the shapes moto leaves out).  Set JOBSUB_UPDATE_GOLDEN=1 to rewrite
tests/golden/ after an intended change.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jobsub import JobState
from jobsub.backends.aws_batch import AWSBatchBackend, AWSBatchParameters, render
from jobsub.backends.aws_batch import status as st
from jobsub.backends.base import Launch, check_env
from jobsub.errors import InvalidParameterError, SubmissionError
from jobsub.packaging import BOOTSTRAP_SOURCE
from jobsub.parameters import CommonParameters

GOLDEN = Path(__file__).parent / "golden"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def _launch(offset: int = 0, env: dict[str, str] | None = None) -> Launch:
    return Launch(
        "s3://bucket/runs/20260101-000000-abcd1234", "aws_batch", offset=offset, task_env=AWSBatchBackend.task_env,
        env=env or {"AWS_ENDPOINT_URL": "http://127.0.0.1:5055"}, tag=f"20260101-000000-abcd1234-{offset}",
    )


def _requests(common: CommonParameters, spec: AWSBatchParameters, n_tasks: int, offset: int = 0) -> dict[str, Any]:
    launch = render.task_launch(_launch(offset, {"AWS_ENDPOINT_URL": "http://127.0.0.1:5055", **common.env}), array=n_tasks > 1)
    launch = launch.replace(code_package="s3://bucket/runs/.code/0123456789abcdef.tar.gz")
    definition = render.definition_request(launch, common, spec)
    submit = render.submit_request(launch, n_tasks, common, spec, "arn:...:job-definition/NAME:1")
    return json.loads(json.dumps({"definition": definition, "submit": submit}).replace(json.dumps(BOOTSTRAP_SOURCE)[1:-1], "<BOOTSTRAP_SOURCE>"))


def test_requests_golden() -> None:
    """Everything a submission sends, for a full set of keys (the bootstrap's source left out)."""
    common = CommonParameters(
        name="train model/v2", timeout_min=90, cpus_per_task=4, mem_gb=7.5, gpus_per_node=1, env={"MODE": "fast"},
    )
    spec = AWSBatchParameters(
        job_queue="gpu-queue", image="123.dkr.ecr.eu-west-1.amazonaws.com/train:3", job_role_arn="arn:aws:iam::1:role/job",
        tags={"team": "ml"}, share_identifier="ml", scheduling_priority=5, spot_retries=3, volumes=["/scratch:/scratch"],
    )
    text = json.dumps(_requests(common, spec, 10_000, offset=20_000), indent=1, sort_keys=True) + "\n"
    golden = GOLDEN / "aws_batch_requests.json"
    if os.environ.get("JOBSUB_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), f"{golden} differs (JOBSUB_UPDATE_GOLDEN=1 rewrites it if intended)"


def test_definition_is_named_by_its_shape_only() -> None:
    spec = AWSBatchParameters(job_queue="q", image="img:1")
    first = render.definition_request(_launch(0), CommonParameters(mem_gb=1), spec)
    again = render.definition_request(_launch(10_000, {"OTHER": "env"}), CommonParameters(mem_gb=1, timeout_min=5), spec)
    bigger = render.definition_request(_launch(0), CommonParameters(mem_gb=2), spec)
    assert first == again  # offsets, env, time limits travel with the submission
    assert first["jobDefinitionName"] != bigger["jobDefinitionName"]
    assert NAME.match(first["jobDefinitionName"])
    command = first["containerProperties"]["command"]
    assert {"Ref::jobsub_folder", "Ref::jobsub_offset", "Ref::jobsub_code_url", "Ref::jobsub_code_dir"} <= set(command)
    names = [a.removeprefix("Ref::") for a in command if a.startswith("Ref::")]
    assert not [(a, b) for a in names for b in names if a != b and b.startswith(a)]  # none eats another


def test_small_submissions_and_plain_jobs_for_one_task() -> None:
    common, spec = CommonParameters(), AWSBatchParameters(job_queue="q", image="img:1")
    one = _requests(common, spec, 1)["submit"]
    assert "arrayProperties" not in one  # AWS arrays have 2 to 10,000 children
    assert _requests(common, spec, 2)["submit"]["arrayProperties"] == {"size": 2}
    assert len(json.dumps(one)) < 1500  # the folder URL, an offset and the environment; no source code
    assert one["retryStrategy"] == {
        "attempts": 3,
        "evaluateOnExit": [{"onStatusReason": "Host EC2*", "action": "RETRY"}, {"onReason": "*", "action": "EXIT"}],
    }


def test_an_existing_definition_gets_the_command_as_an_override() -> None:
    common = CommonParameters(cpus_per_task=2)
    spec = AWSBatchParameters(job_queue="q", job_definition="mine:4", package_code=False)
    request = render.submit_request(_launch(5), 3, common, spec, "mine:4")
    overrides = request["containerOverrides"]
    assert overrides["command"][:3] == ["python3", "-m", "jobsub.worker"]
    assert overrides["command"][-2:] == ["--offset", "5"]
    assert overrides["resourceRequirements"] == [{"type": "VCPU", "value": "2"}]
    assert "parameters" not in request


def test_job_names_are_valid_and_end_in_the_tag() -> None:
    tag = "20260101-000000-abcd1234-10000"
    for name in ("jobsub", "my job/é", "-x", "", "a" * 300):
        full = render.job_name(name, tag)
        assert NAME.match(full) and full.endswith(tag), full


def test_overrides_over_the_limit_are_refused() -> None:
    common, spec = CommonParameters(env={"BIG": "x" * 8200}), AWSBatchParameters(job_queue="q", image="i")
    request = render.submit_request(_launch(0, common.env), 2, common, spec, "d")
    with pytest.raises(SubmissionError, match=r"over AWS's limit of 8192.*BIG \(8200 chars\)"):
        render.check_overrides_size(request)
    render.check_overrides_size(render.submit_request(_launch(0), 2, CommonParameters(), spec, "d"))


def test_short_time_limits_become_aws_minimum_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    spec = AWSBatchParameters(job_queue="q", image="i")
    request = render.submit_request(_launch(0), 1, CommonParameters(timeout_min=0.2), spec, "d")
    assert request["timeout"] == {"attemptDurationSeconds": 60}
    assert "AWS Batch's shortest attempt duration is 60 s" in caplog.text


def test_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="EC2' and 'FARGATE"):
        AWSBatchParameters(platform="lambda")
    with pytest.raises(ValueError, match="at most 9"):
        AWSBatchParameters(spot_retries=10)
    with pytest.raises(InvalidParameterError, match="aws_batch_secrets"):
        check_env(AWSBatchBackend("s3://bucket/runs"), CommonParameters(pass_env=["TOKEN"]))
    secret = AWSBatchParameters(job_queue="q", image="i", secrets={"TOKEN": "arn:aws:ssm:eu-west-1:1:parameter/t"})
    with pytest.raises(InvalidParameterError, match="execution_role_arn"):
        render.definition_request(_launch(), CommonParameters(), secret)
    secret.execution_role_arn = "arn:aws:iam::1:role/exec"
    properties = render.definition_request(_launch(), CommonParameters(), secret)["containerProperties"]
    assert properties["secrets"] == [{"name": "TOKEN", "valueFrom": "arn:aws:ssm:eu-west-1:1:parameter/t"}]
    fargate = AWSBatchParameters(job_queue="q", image="i", platform="fargate")
    with pytest.raises(InvalidParameterError, match="execution_role_arn"):
        render.definition_request(_launch(), CommonParameters(), fargate)


# -- reading AWS's answers ----------------------------------------------------------------------
def _image() -> str:
    return "repo/img:7"


FAILURES: dict[str, tuple[dict[str, Any], JobState, str]] = {
    "oom": (
        {"statusReason": "Essential container in task exited",
         "container": {"exitCode": 137, "reason": "OutOfMemoryError: Container killed due to memory usage"}},
        JobState.OUT_OF_MEMORY, "killed for memory",
    ),
    "timeout": (
        {"statusReason": "Job attempt duration exceeded timeout", "container": {}}, JobState.TIMEOUT, "time limit",
    ),
    "timeout_moto": (  # moto says nothing: no reason, no exit code, the whole limit elapsed
        {"startedAt": 1_000_000, "stoppedAt": 1_060_300}, JobState.TIMEOUT, "time limit of 60 s",
    ),
    "spot": (
        {"statusReason": "Host EC2 (instance i-0abc) terminated.",
         "attempts": [{"statusReason": "Host EC2 (instance i-0abc) terminated.", "container": {}}]},
        JobState.PREEMPTED, "Spot instance was reclaimed",
    ),
    "pull": (
        {"statusReason": "Task failed to start",
         "container": {"reason": "CannotPullContainerError: pull image manifest has been retried 5 time(s)"}},
        JobState.FAILED, "image repo/img:7 could not start",
    ),
    "role": (
        {"statusReason": "ECS was unable to assume the role 'arn:aws:iam::1:role/nope'", "container": {}},
        JobState.FAILED, "image repo/img:7 could not start",
    ),
    "never_ran_moto": ({"startedAt": 1_000_000, "stoppedAt": 1_000_300}, JobState.FAILED, "may never have started"),
    "cancelled": ({"statusReason": "jobsub: cancelled by the user", "container": {"exitCode": 137}},
                  JobState.CANCELLED, "cancelled by the user"),
    "console": ({"statusReason": "Terminated by the operator", "container": {"exitCode": 143}},
                JobState.CANCELLED, "Terminated by the operator"),
    "dependency": ({"statusReason": "Dependent Job failed"}, JobState.CANCELLED, "a dependency failed"),
    "exit": ({"statusReason": "Essential container in task exited", "container": {"exitCode": 3}},
             JobState.FAILED, "exit code 3"),
    "exit_in_attempts": ({"attempts": [{"container": {"exitCode": 2, "reason": "bad"}}]}, JobState.FAILED, "exit code 2: bad"),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_failure_reasons(case: str) -> None:
    job, state, words = FAILURES[case]
    found = st.job_status({"status": "FAILED", **job}, 60, _image)
    assert found.state is state and words in found.reason, found


def test_native_states_map_in_one_table() -> None:
    assert {s: st.job_status({"status": s}, None, _image).state for s in st.NATIVE if s != "FAILED"} == {
        "SUBMITTED": JobState.PENDING, "PENDING": JobState.PENDING, "RUNNABLE": JobState.PENDING,
        "STARTING": JobState.RUNNING, "RUNNING": JobState.RUNNING, "SUCCEEDED": JobState.COMPLETED,
    }
    waiting = st.job_status({"status": "RUNNABLE", "statusReason": "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT"}, None, _image)
    assert waiting.reason == "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT"


def _array(status: str = "RUNNING", reason: str = "", **counts: int) -> dict[str, Any]:
    summary = {"arrayProperties": {"size": sum(counts.values()), "statusSummary": counts}}
    return {"jobId": "P", "status": status, "statusReason": reason, **summary}


def test_an_arrays_counts_in_the_trackers_terms() -> None:
    """statusSummary as the array tracker counts (jobsub.cloud.arrays; its suite: tests/test_cloud_arrays.py)."""
    running = st.parent(_array(RUNNING=2, STARTING=1, RUNNABLE=6, FAILED=1))
    assert running.array and running.size == 10 and not running.ended and running.queued is None
    # STARTING children are not listed by ListJobs RUNNING: they count as waiting
    assert dict(running.counts) == {JobState.RUNNING: 2, JobState.PENDING: 7, JobState.FAILED: 1}
    assert st.parent(_array("PENDING", "no capacity", RUNNABLE=10)).queued == "no capacity"  # stuck RUNNABLE?
    assert st.parent(_array("PENDING", "no capacity", RUNNABLE=9, RUNNING=1)).queued is None
    assert st.parent(_array("RUNNING", SUCCEEDED=9, FAILED=1)).ended  # moto never fails a parent: its counts tell
    assert st.parent(_array("FAILED", "jobsub: cancelled by the user", RUNNING=2)).cancelled == "cancelled by the user"
    plain = st.parent({"jobId": "J", "status": "RUNNABLE", "statusReason": "MISCONFIGURATION"})
    assert not plain.array and plain.queued == "MISCONFIGURATION"


# -- the worker's index --------------------------------------------------------------------------
INDEX = """
import os, sys
from jobsub.worker import _getenv_int
print(_getenv_int("AWS_BATCH_JOB_ARRAY_INDEX|AWS_BATCH_JOB_ID", 0))
"""


@pytest.mark.parametrize(
    ("env", "index"),
    [
        ({"AWS_BATCH_JOB_ARRAY_INDEX": "7", "AWS_BATCH_JOB_ID": "abc:7"}, 7),  # AWS
        ({"AWS_BATCH_JOB_ID": "3f1c-9a:42"}, 42),  # moto: no index variable, the id's suffix
        ({"AWS_BATCH_JOB_ID": "3f1c-9a"}, 0),  # a plain job
        ({}, 0),
    ],
)
def test_worker_reads_the_index_from_alternatives(env: dict[str, str], index: int) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_BATCH")}
    done = subprocess.run([sys.executable, "-c", INDEX], env={**clean, **env}, capture_output=True, text=True, check=True)
    assert int(done.stdout) == index


def test_the_backend_loads_without_boto3() -> None:
    """boto3 is imported when AWS is first called, not by choosing the backend."""
    code = "import sys, jobsub; jobsub.AutoExecutor; import jobsub.backends.aws_batch; print('boto3' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


NAMES = """
import json, os
from jobsub.folder import JobFolder
from jobsub.storage import MemoryStorage
from jobsub.worker import export_environment
env = {"index": "AWS_BATCH_JOB_ARRAY_INDEX|AWS_BATCH_JOB_ID", "job_id": "AWS_BATCH_JOB_ID"}
if os.environ.get("ARRAY"):
    env["array_job_id"] = "AWS_BATCH_JOB_ID"
index, _ = export_environment(JobFolder(MemoryStorage(), "k"), "aws_batch", env, int(os.environ["OFFSET"]))
print(json.dumps([index, os.environ["JOBSUB_JOB_ID"], os.environ["JOBSUB_ARRAY_JOB_ID"]]))
"""


@pytest.mark.parametrize(
    ("job_id", "array", "offset", "expected"),
    [
        ("p1:3", True, 0, [3, "p1_3", "p1"]),  # an array child: jobsub's "<array>_<i>", not AWS's ":"
        ("p2:3", True, 10_000, [10_003, "p2_3", "p2"]),  # the second part of a split array
        ("p3", True, 0, [0, "p3_0", "p3"]),  # a one-task map_array is a plain job on AWS
        ("p4", False, 0, [0, "p4", ""]),  # submit()
    ],
)
def test_tasks_name_themselves_as_jobsub_names_them(job_id: str, array: bool, offset: int, expected: list[Any]) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_BATCH", "JOBSUB"))}
    env = {**clean, "AWS_BATCH_JOB_ID": job_id, "OFFSET": str(offset), **({"ARRAY": "1"} if array else {})}
    done = subprocess.run([sys.executable, "-c", NAMES], env=env, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == expected


def test_missing_aws_extra_is_named_by_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without boto3, `jobsub info` and a submission say which extra to install, not a bare ModuleNotFoundError."""
    from jobsub.errors import BackendError

    monkeypatch.setitem(sys.modules, "boto3", None)  # as if boto3 were not installed
    backend = AWSBatchBackend(root="s3://bucket/runs", region="us-east-1")
    with pytest.raises(BackendError, match=r"AWS \(batch\) needs boto3: pip install 'jobsub\[aws\]'"):
        backend.check()
