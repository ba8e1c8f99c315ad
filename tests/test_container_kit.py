"""The launch half of the cloud kit, without a scheduler: code package, container command,
attached-run ids, the log policy, exit-code conventions and the executor's checks.

Real: the file system, the bootstrap run by this interpreter, fake-gcs-server's JSON API
(the gs:// fetch).  Played: nothing; the stores are ``MemoryStorage`` or a local path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import jobsub
from jobsub.backends import _exits
from jobsub.backends.base import Launch, check_env
from jobsub.cloud.attached import attached_id, attached_states, is_attached
from jobsub.cloud.container import (
    CODE_DIR,
    ContainerParameters,
    code_dir,
    container_command,
    ship_code,
)
from jobsub.cloud.logs import provider_or_folder_logs
from jobsub.folder import JobFolder, code_package_key, register_id
from jobsub.packaging import BOOTSTRAP_SOURCE, bootstrap_command
from jobsub.parameters import CommonParameters
from jobsub.states import JobState, Status
from jobsub.storage import LocalStorage, MemoryStorage
from tests.emulators import endpoint_problem


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "util.py").write_text("VALUE = 1\n")
    return root


def _launch(**changes: object) -> Launch:
    return Launch("s3://b/runs/k", "my", tag="k-0").replace(**changes)


# -- the code package -------------------------------------------------------------------------------------
def test_a_bucket_root_gets_each_code_package_once(tree: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JOBSUB_CODE_CACHE", str(tmp_path / "cache"))
    store = MemoryStorage(f"memory://{uuid.uuid4().hex}")
    spec = ContainerParameters(code_root=str(tree))
    url = ship_code(spec, store, cwd=None, upload=True)
    assert url is not None and url.startswith(f"{store.url}/.code/")
    # a bucket's package is named with its digest, which the bootstrap checks before running it
    location, _, digest = url.partition("#sha256=")
    assert location.endswith(".tar.gz") and len(digest) == 64
    key = location.removeprefix(store.url + "/")
    assert key == code_package_key(Path(key).name.removesuffix(".tar.gz"))
    writes: list[str] = []
    monkeypatch.setattr(store, "write_bytes", lambda k, *a, **kw: writes.append(k))
    assert ship_code(spec, store, cwd=None, upload=True) == url and writes == []  # once per digest
    assert ship_code(ContainerParameters(package_code=False), store, cwd=None, upload=True) is None


def test_a_local_root_keeps_its_packages_in_place(tree: Path, tmp_path: Path) -> None:
    """The tasks see this machine's disk: the package is built into <root>/.code/, nothing is copied."""
    root = tmp_path / "runs"
    root.mkdir()
    path = ship_code(ContainerParameters(), LocalStorage(str(root)), cwd=str(tree), upload=True)
    assert path is not None and Path(path).parent == root / ".code" and Path(path).is_file()


def test_the_container_command_is_rendered_once() -> None:
    plain = container_command(_launch(offset=3), "python3")
    assert plain == ["python3", *_launch(offset=3).module_args()] and plain[-2:] == ["--offset", "3"]
    packaged = container_command(_launch(code_package="s3://b/runs/.code/0123456789abcdef.tar.gz"), "py")
    assert packaged == bootstrap_command(
        "py", "s3://b/runs/.code/0123456789abcdef.tar.gz", f"{CODE_DIR}/0123456789abcdef", _launch().module_args()
    )
    assert code_dir("gs://b/.code/abc.tar.gz") == f"{CODE_DIR}/abc"
    template = container_command(
        _launch(folder="Ref::f", code_package="Ref::c"), "py", unpack_dir="Ref::d", offset="Ref::o",
    )
    assert template[:5] == ["py", "-c", BOOTSTRAP_SOURCE, "Ref::c", "Ref::d"] and template[-2:] == ["--offset", "Ref::o"]
    shell = container_command(_launch(), "py", setup=["export A=1"])
    assert shell[:2] == ["/bin/sh", "-c"] and shell[2].startswith("export A=1\nexec py -m jobsub.worker")


@pytest.fixture(scope="module")
def gcs_bucket() -> str:
    endpoint = os.environ.get("STORAGE_EMULATOR_HOST")
    problem = endpoint_problem("STORAGE_EMULATOR_HOST", "start-fake-gcs.sh", "/storage/v1/b", b"storage#buckets", endpoint)
    if problem:
        pytest.skip(problem)
    gcs = pytest.importorskip("google.cloud.storage", reason="the gcp extra is not installed (pip install -e '.[test]')")
    name = f"jobsub-test-{uuid.uuid4().hex[:12]}"
    gcs.Client().create_bucket(name)
    return name


def test_the_bootstrap_fetches_a_gs_package(tree: Path, tmp_path: Path, gcs_bucket: str) -> None:
    """A GCP task reads its code with its own service account, as an AWS task reads s3://."""
    from jobsub.storage import open_storage

    url = ship_code(ContainerParameters(code_root=str(tree)), open_storage(f"gs://{gcs_bucket}/runs"), cwd=None, upload=True)
    assert url is not None and url.startswith(f"gs://{gcs_bucket}/runs/.code/")
    dest = tmp_path / "from-gs"
    command = bootstrap_command(sys.executable, url, str(dest), ["-m", "pkg.util"])
    subprocess.run(command, check=True, cwd=tmp_path, timeout=60)
    assert (dest / "pkg" / "util.py").read_text() == "VALUE = 1\n"


# -- attached runs: ids through the folder's id index ------------------------------------------------------
def test_attached_ids_are_found_through_the_id_index() -> None:
    """The id is looked up, never parsed: a tag of any shape (here none with an offset) is found."""
    store = MemoryStorage()
    folder = JobFolder(store, "somekey")
    launch = _launch(tag="not-a-key-shape", offset=4)
    parent = attached_id(launch)
    assert is_attached(parent) and not is_attached("1234")
    folder.write_meta({"backend": "my", "submissions": [{"id": parent, "offset": 4, "count": 2}]})
    register_id(store, parent, folder.key)
    folder.write_exit(4, "COMPLETED", "")
    folder.write_exit(5, "TIMEOUT", "time limit of 0.05 min (timeout_min) reached")
    states = attached_states(store, [f"{parent}_0", f"{parent}_1", "here-unknown_0"])
    assert states[f"{parent}_0"] == Status(JobState.COMPLETED, "")
    assert states[f"{parent}_1"].state is JobState.TIMEOUT
    assert states["here-unknown_0"].state is JobState.LOST


def test_the_submission_record_is_read_through_the_folder(tmp_path: Path) -> None:
    """What backends ask of ``meta.json`` (upstreams, array or not, task count), as the executor wrote it."""
    ex = jobsub.Executor(tmp_path / "runs", backend="debug")
    upstream = ex.submit(int, "1")
    jobs = ex.map_array(max, [upstream, 2, 3], [0, 0, 0])
    folder, first = jobs[0].folder, upstream.folder
    assert folder.is_array() and folder.task_count() == 3 and not first.is_array() and first.task_count() == 1
    assert folder.waits_for() == {0: [[first.url, 0, [0]]]}  # the other tasks wait for no job
    assert first.waits_for() == {}
    nowhere = JobFolder(MemoryStorage(), "not-written")
    assert not nowhere.is_array() and nowhere.task_count() == 1
    assert [j.result() for j in jobs] == [1, 2, 3]


# -- the log policy ---------------------------------------------------------------------------------------------
def test_logs_come_from_the_provider_else_the_folder() -> None:
    folder = JobFolder(MemoryStorage(), "k")
    folder.write_task_log(0, 0, "out", b"from the folder\n")
    asked: list[str] = []

    def ended() -> bool:
        asked.append("ended")
        return True

    assert provider_or_folder_logs(folder, 0, 0, ended=ended, read=lambda: "streamed\n") == ("streamed\n", "streamed\n")
    assert provider_or_folder_logs(folder, 0, 0, ended=ended, read=lambda: None) == ("from the folder\n", None)
    assert provider_or_folder_logs(folder, 1, 0, ended=ended, read=lambda: "") == ("", "")  # an empty stream
    assert provider_or_folder_logs(folder, 1, 0, ended=ended, read=lambda: None) == (None, None)
    # a task still running (no result) is not waited for: what it printed so far
    assert provider_or_folder_logs(folder, 0, 0, ended=lambda: False, read=lambda: "so far\n", wait_s=60)[0] == "so far\n"


# -- exit-code conventions ----------------------------------------------------------------------------------------
def test_exit_code_conventions_are_one_table() -> None:
    assert _exits.worker_exit(76) == _exits.DEPENDENCY_FAILED and _exits.DEPENDENCY_FAILED.state is JobState.CANCELLED
    assert "requeue code" in (_exits.worker_exit(75) or Status(JobState.UNKNOWN)).reason
    assert "job folder" in (_exits.worker_exit(74) or Status(JobState.UNKNOWN)).reason
    assert _exits.worker_exit(1) is None and _exits.worker_exit(None) is None
    assert _exits.killed_for_memory(137, memory_limited=True) and not _exits.killed_for_memory(137, memory_limited=False)
    assert not _exits.killed_for_memory(1, memory_limited=True)
    assert _exits.timed_out(59.5, 60) and not _exits.timed_out(30, 60) and not _exits.timed_out(None, 60)
    assert not _exits.timed_out(100, None)


# -- the executor's checks, before anything is written ---------------------------------------------------------
def test_a_local_folder_is_refused_for_tasks_that_cannot_see_it(tmp_path: Path) -> None:
    pytest.importorskip("boto3", reason="the aws extra is not installed (pip install -e '.[test]')")
    runs = tmp_path / "runs"
    with pytest.raises(jobsub.InvalidParameterError, match="aws_batch tasks cannot see"):
        jobsub.Executor(runs, backend="aws_batch")
    assert not runs.exists()  # nothing written


def no_credentials(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """An environment in which neither boto3's chain nor Google's finds any credentials."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))  # no ~/.aws, no gcloud configuration
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "aws-credentials"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(home / "gcloud"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # not on EC2: no instance role to ask
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # not on GCE: no metadata server to ask


def test_missing_google_credentials_are_said_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No request at all: the check reads the credential chain only (no emulator is set here)."""
    pytest.importorskip("google.cloud.storage", reason="the gcp extra is not installed (pip install -e '.[test]')")
    no_credentials(monkeypatch, tmp_path)
    with pytest.raises(jobsub.BackendError, match="no Google credentials found: Application Default Credentials"):
        jobsub.Executor("gs://jobsub-no-such-bucket/runs", backend="local")


def test_secrets_bound_for_a_shown_environment_are_refused() -> None:
    from jobsub.backends.aws_batch import AWSBatchBackend

    shown = AWSBatchBackend("s3://bucket/runs")
    with pytest.raises(jobsub.InvalidParameterError, match="give the job a role"):
        check_env(shown, CommonParameters(env={"AWS_SESSION_TOKEN": "x", "MODE": "fast"}))
    check_env(shown, CommonParameters(env={"MODE": "fast"}))
    from jobsub.backends.local import LocalBackend

    check_env(LocalBackend("/tmp"), CommonParameters(env={"AWS_SESSION_TOKEN": "x"}, pass_env=["TOKEN"]))
