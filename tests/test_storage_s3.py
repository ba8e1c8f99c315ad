"""``s3://`` job folders against a real S3 API (moto's server, started by scripts/start-moto.sh).

Faults are injected at the HTTP level: a botocore ``before-send`` hook
answers a request with a genuine S3 error document, which boto3 then parses
as it would AWS's answer.  jobsub itself is never patched.
"""

from __future__ import annotations

import operator
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import jobsub
from jobsub.calls import Outcome, dumps_checked
from jobsub.errors import BackendError
from jobsub.folder import JobFolder
from jobsub.storage import Storage, open_storage
from tests.conformance.storage import StorageSuite
from tests.emulators import endpoint_problem

boto3 = pytest.importorskip("boto3", reason="the aws extra is not installed (pip install -e '.[test]')")
from botocore.awsrequest import AWSResponse  # noqa: E402 - after the importorskip
from botocore.config import Config  # noqa: E402

from jobsub.storage.s3 import S3Storage  # noqa: E402
from tests.test_container_kit import no_credentials  # noqa: E402


@pytest.fixture(scope="session")
def moto() -> Iterator[str]:
    """moto's endpoint; the environment holds dummy credentials while the tests run (never real ones)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    problem = endpoint_problem("AWS_ENDPOINT_URL", "start-moto.sh", "/", b"ListAllMyBucketsResult", endpoint)
    if problem:
        pytest.skip(problem)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
            env.delenv(name, raising=False)
        assert endpoint is not None
        yield endpoint


def raw_client() -> Any:
    """A client of its own (hooks registered on it stay in the test), without botocore's retries."""
    return boto3.session.Session().client("s3", config=Config(retries={"total_max_attempts": 1}))


@pytest.fixture(scope="session")
def bucket(moto: str) -> Iterator[str]:
    client = raw_client()
    name = f"jobsub-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    yield name
    # the server outlives the test run: leave nothing in it
    for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
        client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
    client.delete_bucket(Bucket=name)


@pytest.fixture
def url(bucket: str) -> str:
    """A fresh prefix of the session's bucket for each test."""
    return f"s3://{bucket}/t-{uuid.uuid4().hex[:10]}"


class TestS3Storage(StorageSuite):
    @pytest.fixture
    def storage(self, url: str) -> Storage:
        return S3Storage(url)


def s3_error(status: int, code: str, message: str = "injected by the test") -> AWSResponse:
    """An S3 error answer, as AWS words it."""
    body = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'

    class Raw:
        def stream(self, **_: Any) -> Iterator[bytes]:
            yield body.encode()

    return AWSResponse("https://s3.test", status, {"Content-Type": "application/xml"}, Raw())


def on_send(client: Any, operation: str, answer: Callable[[Any], AWSResponse | None]) -> list[Any]:
    """Call ``answer(request)`` before each ``operation`` request goes out; a response replaces the real one."""
    sent: list[Any] = []

    def handler(request: Any, **_: Any) -> AWSResponse | None:
        sent.append(request)
        return answer(request)

    client.meta.events.register(f"before-send.s3.{operation}", handler)
    return sent


def fail_first(n: int, status: int, code: str) -> Callable[[Any], AWSResponse | None]:
    calls = iter(range(10**6))
    return lambda request: s3_error(status, code) if next(calls) < n else None


def fast_storage(url: str, client: Any) -> S3Storage:
    storage = S3Storage(url, client=client)
    storage.first_retry_delay_s = 0.01
    return storage


# -- URLs, keys, extras ----------------------------------------------------------------------------
def test_url_is_normalised_and_keys_are_relative_to_it(bucket: str) -> None:
    storage = S3Storage(f"s3://{bucket}//runs/a/")
    assert storage.url == f"s3://{bucket}/runs/a" and repr(storage) == f"S3Storage('s3://{bucket}/runs/a')"
    assert S3Storage(f"s3://{bucket}").url == f"s3://{bucket}"
    assert storage.local_file("k") is None and storage.local_path("k") is None
    storage.write_bytes("job/x", b"1")
    assert raw_client().get_object(Bucket=bucket, Key="runs/a/job/x")["Body"].read() == b"1"
    assert isinstance(open_storage(f"s3://{bucket}/runs/a"), S3Storage)
    for bad in ("s3://", "s3:///prefix"):
        with pytest.raises(ValueError, match="names no bucket"):
            S3Storage(bad)


def test_odd_key_names_round_trip(url: str) -> None:
    storage = S3Storage(url)
    names = ["d/with space", "d/ünï", "d/quote'\"", "d/plus+percent%20", "d/.hidden"]
    for name in names:
        storage.write_bytes(name, name.encode())
    assert [storage.read_bytes(name) for name in names] == [name.encode() for name in names]
    assert storage.list("d") == sorted(n for n in names if n != "d/.hidden")


def test_missing_aws_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "jobsub.storage.s3")
    monkeypatch.setitem(sys.modules, "boto3", None)  # as if boto3 were not installed
    with pytest.raises(ImportError, match=r"pip install 'jobsub\[aws\]'"):
        open_storage("s3://bucket/prefix")


# -- a missing bucket, a refusal: never "absent" ---------------------------------------------------
def test_missing_bucket_is_named_and_never_taken_for_a_missing_key(moto: str) -> None:
    name = f"jobsub-missing-{uuid.uuid4().hex[:8]}"
    storage = S3Storage(f"s3://{name}/runs")
    says = rf"cannot write job folders in s3://{name}/runs: S3 bucket '{name}' does not exist.*NoSuchBucket"
    with pytest.raises(BackendError, match=says):
        storage.check_writable()
    for call in (lambda: storage.read_bytes("k"), lambda: storage.exists("k"), lambda: storage.list(""),
                 lambda: storage.delete("k")):
        with pytest.raises(BackendError, match=f"bucket '{name}' does not exist"):
            call()


@pytest.mark.parametrize(
    ("status", "code"), [(403, "AccessDenied"), (403, "InvalidAccessKeyId"), (400, "ExpiredToken")]
)
def test_refusals_are_permission_errors_and_not_retried(url: str, bucket: str, status: int, code: str) -> None:
    client = raw_client()
    storage = fast_storage(url, client)
    storage.write_bytes("job/result", b"r")
    gets = on_send(client, "GetObject", lambda request: s3_error(status, code))
    lists = on_send(client, "ListObjectsV2", lambda request: s3_error(status, code))
    with pytest.raises(PermissionError, match=rf"bucket '{bucket}'.*{code}: injected by the test"):
        storage.read_bytes("job/result")
    with pytest.raises(PermissionError, match=code):
        storage.exists("job/result")  # not False: the result is there, we may not see it
    with pytest.raises(PermissionError, match=code):
        storage.list("job")
    assert len(gets) == 1 and len(lists) == 2


def test_no_credentials_is_a_permission_error(url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata call off loopback
    storage = S3Storage(url, client=raw_client())
    with pytest.raises(PermissionError, match="no usable AWS credentials"):
        storage.read_bytes("k")


def test_check_writable_names_the_refusal(url: str, bucket: str) -> None:
    client = raw_client()
    on_send(client, "PutObject", lambda request: s3_error(403, "AccessDenied", "not for you"))
    says = rf"cannot write job folders in {url}: .*'{bucket}'.*AccessDenied: not for you"
    with pytest.raises(PermissionError, match=says):
        S3Storage(url, client=client).check_writable()


# -- listing in pages ------------------------------------------------------------------------------
def test_listing_asks_for_1000_names_a_call(url: str) -> None:
    client = raw_client()
    storage = S3Storage(url, client=client)
    storage.write_bytes("d/x", b"")
    lists = on_send(client, "ListObjectsV2", lambda request: None)
    assert storage.list("d") == ["d/x"]
    assert "max-keys=1000" in lists[0].url


def test_listing_pages_through_many_keys_in_few_calls(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """2,500 keys at S3's 1,000 a page, scaled down to 250 at 100 a page: moto takes ~10-20 ms a request."""
    import jobsub.storage.s3

    monkeypatch.setattr(jobsub.storage.s3, "PAGE_SIZE", 100)
    client = raw_client()
    storage = S3Storage(url, client=client)
    keys = [f"many/{i:05d}" for i in range(250)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: storage.write_bytes(key, b""), [*keys, "many/sub/x", "many/.hidden"]))
    lists = on_send(client, "ListObjectsV2", lambda request: None)
    assert storage.list("many") == sorted([*keys, "many/sub"])
    assert len(lists) == 3  # a call per page, never one per key
    assert storage.exists("many/00123") and storage.exists("many/sub") and not storage.exists("many/0012")
    deletes = on_send(client, "DeleteObjects", lambda request: None)
    lists.clear()
    storage.delete("many")
    assert len(lists) == 3 and len(deletes) == 3  # 100 names per DeleteObjects here, 1,000 for real
    assert storage.list("many") == [] and not storage.exists("many")


# -- create-only writes ----------------------------------------------------------------------------
def test_create_only_race_of_many_writers_has_one_winner(url: str) -> None:
    storage = S3Storage(url)
    barrier = threading.Barrier(8)
    outcomes: dict[int, str] = {}

    def write(i: int) -> None:
        barrier.wait()
        try:
            storage.write_bytes("race", str(i).encode(), create_only=True)
            outcomes[i] = "won"
        except FileExistsError:
            outcomes[i] = "lost"

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(8)))
    winners = [i for i, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1 and len(outcomes) == 8
    assert storage.read_bytes("race") == str(winners[0]).encode()


def test_a_retried_create_only_write_recognises_its_own_object(url: str, bucket: str) -> None:
    """The first PUT lands but its answer is lost (500); the retry meets a 412 and must not call that a loss."""
    plain = raw_client()
    prefix = url.removeprefix(f"s3://{bucket}/")

    def storage_whose_first_put(lands: bytes, key: str) -> S3Storage:
        client = raw_client()
        first = iter([True])

        def answer(request: Any) -> AWSResponse | None:
            if next(first, False):
                plain.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=lands)
                return s3_error(500, "InternalError")
            return None

        on_send(client, "PutObject", answer)
        return fast_storage(url, client)

    storage_whose_first_put(b"mine", "ours").write_bytes("ours", b"mine", create_only=True)
    assert S3Storage(url).read_bytes("ours") == b"mine"  # no FileExistsError: the object is this write's
    with pytest.raises(FileExistsError):  # a twin's bytes: this write did lose
        storage_whose_first_put(b"a twin's", "theirs").write_bytes("theirs", b"mine", create_only=True)


# -- transient failures ----------------------------------------------------------------------------
def test_transient_errors_are_retried(url: str) -> None:
    client = raw_client()
    storage = fast_storage(url, client)
    puts = on_send(client, "PutObject", fail_first(2, 503, "SlowDown"))
    gets = on_send(client, "GetObject", fail_first(1, 500, "InternalError"))
    lists = on_send(client, "ListObjectsV2", fail_first(1, 503, "ServiceUnavailable"))
    storage.write_bytes("k", b"v")
    assert storage.read_bytes("k") == b"v" and storage.list("") == ["k"]
    assert (len(puts), len(gets), len(lists)) == (3, 2, 2)


def test_retries_give_up_with_a_backend_error(url: str) -> None:
    client = raw_client()
    gets = on_send(client, "GetObject", lambda request: s3_error(503, "SlowDown", "Please reduce your request rate."))
    with pytest.raises(BackendError, match="SlowDown: Please reduce your request rate"):
        fast_storage(url, client).read_bytes("k")
    assert len(gets) == 6


# -- multipart uploads -----------------------------------------------------------------------------
def test_large_writes_are_multipart_and_stay_create_only(url: str, bucket: str) -> None:
    client = raw_client()
    storage = fast_storage(url, client)
    storage.multipart_threshold, storage.part_size = 6 * 2**20, 5 * 2**20
    parts = on_send(client, "UploadPart", lambda request: None)
    data = os.urandom(11 * 2**20)
    storage.write_bytes("big", data, create_only=True)
    assert storage.read_bytes("big") == data and len(parts) == 3
    with pytest.raises(FileExistsError):
        storage.write_bytes("big", data[::-1], create_only=True)
    storage.write_bytes("big", data[::-1])  # an overwrite, whole
    assert storage.read_bytes("big") == data[::-1]
    on_send(client, "UploadPart", lambda request: s3_error(500, "InternalError"))
    with pytest.raises(BackendError, match="InternalError"):
        storage.write_bytes("broken", data)
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []  # aborted, nothing billed
    assert not storage.exists("broken")


# -- what a task needs -----------------------------------------------------------------------------
def test_task_env_reaches_the_store_and_holds_no_credentials(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", "secret-token")
    storage = S3Storage(url)
    storage.write_bytes("job/call.pkl", b"payload")
    env = storage.task_env()
    assert env["AWS_ENDPOINT_URL"] == os.environ["AWS_ENDPOINT_URL"] and env["AWS_DEFAULT_REGION"]
    assert not any(name in env for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", os.environ["AWS_ENDPOINT_URL"])
    assert storage.task_env()["AWS_ENDPOINT_URL_S3"] == os.environ["AWS_ENDPOINT_URL"]
    # a task: task_env, plus the credentials its own machine provides (here the dummy ones)
    task = {"PATH": os.environ["PATH"], "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", **env}
    code = f"from jobsub.storage import open_storage; print(open_storage({url!r}).read_bytes('job/call.pkl').decode())"
    out = subprocess.run([sys.executable, "-c", code], env=task, capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "payload"


def test_the_worker_runs_a_task_whose_folder_is_in_s3(url: str) -> None:
    """What a cloud backend will start: ``python -m jobsub.worker s3://...``, with task_env and its own credentials."""
    folder = JobFolder.create(S3Storage(url))
    folder.write_call(dumps_checked({"function": operator.mul, "timeout_min": 0}, "the function"))
    folder.write_args([dumps_checked(((6, 7), {}), "the arguments")])
    task = {"PATH": os.environ["PATH"], "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            **folder.storage.task_env()}
    subprocess.run([sys.executable, "-m", "jobsub.worker", folder.url], env=task, check=True, timeout=120)
    payload = folder.read_result(0, 0)
    assert payload is not None
    outcome = Outcome.loads(payload)
    assert outcome.ok and outcome.value == 42


# -- the executor's credential check, before anything is written ---------------------------------------------
@pytest.mark.parametrize("backend", ["aws_batch", "local"])
def test_missing_aws_credentials_are_said_before_anything_is_written(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """Against moto: without credentials the executor names where boto3 looked, and the bucket stays empty."""
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    with monkeypatch.context() as env:
        no_credentials(env, tmp_path)
        with pytest.raises(jobsub.BackendError, match="no AWS credentials found: boto3 looked in the environment"):
            jobsub.Executor(f"s3://{bucket}/{prefix}/runs", backend=backend)
    assert S3Storage(f"s3://{bucket}").list(prefix) == []  # not even the write probe
    jobsub.Executor(f"s3://{bucket}/{prefix}/runs", backend=backend)  # the emulator's dummy credentials pass


# -- another process's environment (a daemon serving a submission) --------------------------------
def test_a_client_for_another_environment_uses_its_values_and_leaves_os_environ_alone(
    url: str, moto: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real: moto's S3.  boto3's ``Session.client`` is wrapped only to look at ``os.environ`` while
    the client for the submitter's environment is made: this process's must stay as it is (other
    threads read it), and the client must still reach the submitter's endpoint with its keys."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # this process's own: nothing answers there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "the-daemons-key")
    environ, seen = os.environ, []
    made = boto3.session.Session.client

    def watched(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append((os.environ is environ, os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_ENDPOINT_URL")))
        return made(self, *args, **kwargs)

    monkeypatch.setattr(boto3.session.Session, "client", watched)
    key = f"submitter-{uuid.uuid4().hex[:8]}"  # a distinct environment: a client of its own
    env = {"AWS_ENDPOINT_URL": moto, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    storage = S3Storage(url, env=env)
    storage.write_bytes("k", b"from the submitter's environment")
    assert seen == [(True, "the-daemons-key", "http://127.0.0.1:9")]
    signed: list[str] = []
    storage.client.meta.events.register(
        "before-send.s3", lambda request, **_: signed.append(str(request.headers["Authorization"]))
    )
    assert storage.read_bytes("k") == b"from the submitter's environment"
    assert f"Credential={key}/" in signed[0]
    assert storage.client.meta.endpoint_url == moto and storage.client.meta.region_name == "us-east-1"


def test_a_submitter_without_keys_never_gets_the_daemons(url: str, moto: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real: moto's S3.  This process has keys, the submitter's environment none (nor a profile):
    the client made for it finds no credentials, rather than borrowing this process's."""
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    env = {"AWS_ENDPOINT_URL": moto, "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/nonexistent/config",
           "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials", "JOBSUB_TEST": uuid.uuid4().hex}
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(PermissionError, match="no usable AWS credentials"):
        S3Storage(url, env=env).read_bytes("k")
