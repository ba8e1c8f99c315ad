"""What is special to the Docker backend, against the real engine (scripts/start-docker.sh).

The shared behaviour (submit, arrays, failures, cancel, timeout, reattach)
is in test_behaviour.py, which runs on Docker too.  Functions that run in
containers are defined inside the tests: cloudpickle then ships them by
value, so the containers never import this module (and its pytest/docker
imports).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jobsub
from jobsub import JobState
from jobsub.backends.docker import DockerBackend
from tests import docker_env, tasks
from tests.conformance.behaviour import BackendSuite
from tests.conftest import wait_until

pytestmark = pytest.mark.docker


@pytest.fixture
def api() -> Iterator[Any]:
    docker_env.require()
    import docker

    client = docker.from_env()
    yield client.api
    client.close()


@pytest.fixture
def ex(api: Any, tmp_path: Path) -> jobsub.AutoExecutor:
    executor = jobsub.AutoExecutor(folder=tmp_path / "runs", cluster="docker")
    executor.update_parameters(**docker_env.parameters())
    return executor


def _containers(api: Any, key: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = api.containers(all=True, filters={"label": [f"jobsub.key={key}"]})
    return found


class TestDockerBehaviour(BackendSuite):
    cluster = "docker"
    checkpoint_margin_s = 5.0  # a container starts in seconds on a busy machine

    @pytest.fixture
    def service(self) -> None:
        docker_env.require()

    @pytest.fixture
    def backend_parameters(self) -> dict[str, Any]:
        return docker_env.parameters()


def test_labels_resources_and_cleanup(ex: jobsub.AutoExecutor, api: Any) -> None:
    ex.update_parameters(cpus_per_task=1, mem_gb=0.5, env={"FROM_ENV": "yes"})
    job = ex.submit(tasks.sleep_then, 1.5, "done")
    wait_until(lambda: job.state == "RUNNING")
    (container,) = _containers(api, job.job_id)
    labels = container["Labels"]
    assert labels["jobsub.folder"] == job.folder.url and labels["jobsub.job_id"] == job.job_id
    assert (labels["jobsub.task"], labels["jobsub.rank"], labels["jobsub.backend"]) == ("0", "0", "docker")
    info = api.inspect_container(container["Id"])
    assert info["HostConfig"]["NanoCpus"] == 10**9
    assert info["HostConfig"]["Memory"] == 2**29
    assert info["HostConfig"]["NetworkMode"] == "host"
    assert info["Config"]["User"] == f"{os.getuid()}:{os.getgid()}"
    assert "FROM_ENV=yes" in info["Config"]["Env"]
    assert job.result(timeout=60) == "done"
    # finished containers are removed once their output is saved
    wait_until(lambda: not _containers(api, job.job_id), timeout=10)
    assert job.folder.read_exit(0)["state"] == "COMPLETED"


def test_states_of_many_jobs_cost_no_engine_call(ex: jobsub.AutoExecutor) -> None:
    """States come from the exit records and one request to the dispatcher: the engine's CPU starts containers."""
    ex.update_parameters(array_parallelism=2)
    jobs = ex.map_array(tasks.sleep_then, [1.0] * 4)
    backend = ex.backend
    assert isinstance(backend, DockerBackend)
    real = backend.api
    calls: list[str] = []

    class Counting:  # an injected client that records what is asked of the engine
        def __getattr__(self, name: str) -> Any:
            calls.append(name)
            return getattr(real, name)

    backend._api_client = Counting()
    try:
        states = backend.states([j.job_id for j in jobs])
    finally:
        backend._api_client = real
    assert calls == []
    assert {s.state for s in states.values()} <= {JobState.PENDING, JobState.RUNNING}
    assert [j.result(timeout=60) for j in jobs] == [None] * 4


def test_array_parallelism_is_respected(ex: jobsub.AutoExecutor) -> None:
    ex.update_parameters(array_parallelism=2)
    jobs = ex.map_array(tasks.sleep_then, [0.6] * 5)
    assert [j.result(timeout=120) for j in jobs] == [None] * 5
    spans = [(j.usage[0]["start"], j.usage[0]["end"]) for j in jobs]
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most == 2, spans


def test_time_limit_removes_the_container(ex: jobsub.AutoExecutor, api: Any) -> None:
    ex.update_parameters(timeout_min=0.02)
    job = ex.submit(tasks.sleep_then, 60)
    with pytest.raises(jobsub.JobTimeoutError, match="time limit of 0.02 min") as info:
        job.result(timeout=60)
    assert info.value.state is JobState.TIMEOUT and job.state == "TIMEOUT"
    wait_until(lambda: not _containers(api, job.job_id), timeout=15)


def test_cancel_running_and_pending_tasks(ex: jobsub.AutoExecutor, api: Any) -> None:
    ex.update_parameters(array_parallelism=1)
    running, pending = ex.map_array(tasks.sleep_then, [60, 60])
    wait_until(lambda: running.state == "RUNNING")
    assert pending.state == "PENDING"
    assert pending.cancel() and running.cancel()
    for job in (running, pending):
        with pytest.raises(jobsub.JobCancelledError):
            job.result(timeout=30)
    wait_until(lambda: not _containers(api, running.folder.key), timeout=15)
    assert running.folder.read_run(1) is None  # the pending task never started


def test_vanished_container_is_lost(ex: jobsub.AutoExecutor, api: Any) -> None:
    job = ex.submit(tasks.sleep_then, 60)
    wait_until(lambda: job.state == "RUNNING")
    (container,) = _containers(api, job.job_id)
    api.remove_container(container["Id"], force=True)  # someone else removes it
    with pytest.raises(jobsub.JobLostError, match="disappeared"):
        job.result(timeout=30)


def test_code_from_the_working_tree_is_importable(ex: jobsub.AutoExecutor, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tmp_path / "tree"
    (tree / "helpers").mkdir(parents=True)
    (tree / "mymod.py").write_text("from helpers.names import NAME\nGREETING = 'hello from ' + NAME\n")
    (tree / "helpers" / "__init__.py").write_text("")
    (tree / "helpers" / "names.py").write_text("NAME = 'the working tree'\n")
    monkeypatch.chdir(tree)

    def greet() -> tuple[str, str]:
        import mymod  # type: ignore[import-not-found]  # exists only in the temporary tree

        return mymod.GREETING, mymod.__file__

    job = ex.submit(greet)
    greeting, where = job.result(timeout=60)
    assert greeting == "hello from the working tree"
    code_dir = Path(where).parent
    assert (code_dir / "jobsub" / "worker.py").exists()  # jobsub came with it: the image has none
    assert Path(job.folder.backend_file("docker", "code.tar.gz") or "").exists()


def test_missing_image_fails_fast_and_names_it(ex: jobsub.AutoExecutor) -> None:
    ex.update_parameters(docker_image="jobsub-no-such-image:nope")
    start = time.monotonic()
    with pytest.raises(jobsub.SubmissionError, match="'jobsub-no-such-image:nope' is not on the engine"):
        ex.submit(tasks.add, 1, 1)
    assert time.monotonic() - start < 10
    assert not [p for p in ex.folder.iterdir() if not p.name.startswith(".")]


def test_image_that_cannot_be_pulled_fails_the_submit_and_names_it(ex: jobsub.AutoExecutor) -> None:
    """No registry here (and no such image anywhere): the engine's refusal, not a hang."""
    ex.update_parameters(docker_image="jobsub-test/no-such-image:never", docker_pull=True)
    with pytest.raises(jobsub.SubmissionError, match=r"'jobsub-test/no-such-image:never' is not on the engine and pulling"):
        ex.submit(tasks.add, 1, 2)


def test_unreachable_engine_is_a_backend_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docker_env.require()
    sock = tmp_path / "no-engine.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")
    with pytest.raises(jobsub.BackendError, match="cannot reach the Docker engine") as info:
        jobsub.AutoExecutor(folder=tmp_path / "runs", cluster="docker")
    assert str(sock) in str(info.value)


def test_gpus_on_an_engine_without_them_fail_the_submit_and_say_why(ex: jobsub.AutoExecutor, api: Any) -> None:
    """Our engine has no GPU runtime: the engine takes the request's shape, and its refusal is explained."""
    if "nvidia" in api.info().get("Runtimes", {}):
        pytest.skip("this engine has the NVIDIA runtime: GPU requests would be granted")
    ex.update_parameters(gpus_per_node=1)
    with pytest.raises(jobsub.SubmissionError, match=r"device driver.*gpus_per_node=1 needs GPUs.*NVIDIA"):
        ex.submit(tasks.add, 1, 2)
    assert not any(p for p in ex.folder.iterdir() if not p.name.startswith("."))


def test_bad_network_fails_the_submit(ex: jobsub.AutoExecutor) -> None:
    ex.update_parameters(docker_network="jobsub-no-such-network")
    with pytest.raises(jobsub.SubmissionError, match="jobsub-no-such-network"):
        ex.submit(tasks.add, 1, 1)


def test_folder_files_belong_to_the_submitting_user(ex: jobsub.AutoExecutor, tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "input.txt").write_text("mounted")

    def read_and_write() -> str:
        print("some output")
        return Path(os.environ["EXTRA"], "input.txt").read_text()

    ex.update_parameters(docker_volumes=[f"{extra}:/extra:ro"], env={"EXTRA": "/extra"})
    job = ex.submit(read_and_write)
    assert job.result(timeout=60) == "mounted"
    wait_until(lambda: job.folder.read_exit(0) is not None)
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in job.folder.path.rglob("*")}  # type: ignore[union-attr]
    assert owners == {(os.getuid(), os.getgid())}


def test_setup_lines_run_in_the_container_shell(ex: jobsub.AutoExecutor) -> None:
    ex.update_parameters(setup=["export FROM_SETUP=yes"])
    assert ex.submit(tasks.getenv, "FROM_SETUP").result(timeout=60) == "yes"


def test_interactive_mode_runs_attached(ex: jobsub.AutoExecutor, capfd: pytest.CaptureFixture[str]) -> None:
    ex.update_parameters(docker_interactive=True)
    job = ex.submit(tasks.print_and_return, "attached")
    assert job.done()  # it ran before submit returned
    assert job.result() == "attached"
    out, err = capfd.readouterr()
    assert "attached" in out and "to stderr: attached" in err
    assert "attached" in (job.stdout() or "")


def test_the_attached_run_passes_pass_env(ex: jobsub.AutoExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real engine: ``debug`` runs the task in a container here, which gets the ``pass_env``
    variables as a dispatched run's containers do, and the folder never holds them."""
    monkeypatch.setenv("JOBSUB_TEST_TOKEN", "attached-s3cr3t")
    ex.update_parameters(docker_debug=True, pass_env=["JOBSUB_TEST_TOKEN"])
    job = ex.submit(tasks.getenv, "JOBSUB_TEST_TOKEN")
    assert job.done() and job.result() == "attached-s3cr3t"
    root = job.folder.path
    assert root is not None
    holding = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and b"attached-s3cr3t" in p.read_bytes()]
    assert holding == ["result/0.0.pkl"]  # only the value the task returned


def test_the_attached_run_honours_timeout_min(ex: jobsub.AutoExecutor, api: Any) -> None:
    """``debug`` (``interactive``'s name on every container backend) runs attached within the time
    limit: the container is stopped at it and the task ends TIMEOUT, not after its own minute."""
    ex.update_parameters(docker_debug=True, timeout_min=0.05)
    started = time.monotonic()
    job = ex.submit(time.sleep, 60)
    assert time.monotonic() - started < 45 and job.done()
    with pytest.raises(jobsub.JobTimeoutError, match="timeout_min"):
        job.result()
    assert not _containers(api, job.folder.key)  # removed after


_DEBUGGED_SCRIPT = """
import json, sys
import jobsub

def task(x):
    doubled = x * 2
    breakpoint()
    return doubled + 1

ex = jobsub.AutoExecutor(folder=sys.argv[1], cluster="docker")
ex.update_parameters(docker_interactive=True, **json.loads(sys.argv[2]))
print("RESULT", ex.submit(task, 20).result(), flush=True)
"""


def test_interactive_mode_in_a_terminal_stops_at_breakpoint(api: Any, tmp_path: Path) -> None:
    """A real pseudo-terminal: pdb inside the container reads our keys and prints to our screen."""
    import pty
    import select

    project = tmp_path / "project"  # what gets packaged: just the script
    project.mkdir()
    (project / "debug_me.py").write_text(_DEBUGGED_SCRIPT)
    argv = [sys.executable, "debug_me.py", str(tmp_path / "runs"), json.dumps(docker_env.parameters())]
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child becomes the script
        os.chdir(project)
        os.execv(sys.executable, argv)
    screen = b""

    def read_until(marker: bytes, timeout: float = 60.0) -> None:
        nonlocal screen
        deadline = time.monotonic() + timeout
        while marker not in screen:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"no {marker!r} on the terminal after {timeout} s; it shows:\n{screen.decode(errors='replace')}")
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                chunk = b""
            if not chunk:
                raise AssertionError(f"the terminal closed before {marker!r}:\n{screen.decode(errors='replace')}")
            screen += chunk

    try:
        read_until(b"(Pdb)")
        os.write(fd, b"p doubled * 100\r")
        read_until(b"4000")
        os.write(fd, b"c\r")
        read_until(b"RESULT 41")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)
        # a failed run leaves pdb waiting in its container (the killed script could not remove it)
        for container in api.containers(all=True, filters={"label": [f"jobsub.root={tmp_path / 'runs'}"]}):
            api.remove_container(container["Id"], force=True)


@pytest.fixture
def private_dispatcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A dispatcher of this test's own (its socket in tmp_path): the test may kill it."""
    monkeypatch.setenv("JOBSUB_LOCAL_DIR", str(tmp_path / "dispatch"))
    monkeypatch.setenv("JOBSUB_DOCKER_IDLE_S", "5")
    yield tmp_path / "dispatch"
    for pid_file in (tmp_path / "dispatch").glob("*.pid"):
        _kill(int(pid_file.read_text()), signal.SIGTERM)


def _kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def test_orphaned_submission_is_adopted(private_dispatcher: Path, ex: jobsub.AutoExecutor) -> None:
    ex.update_parameters(array_parallelism=1)
    jobs = ex.map_array(tasks.sleep_then, [0.5, 0.5, 0.5], ["a", "b", "c"])
    (pid_file,) = private_dispatcher.glob("docker-*.pid")
    first_pid = int(pid_file.read_text())
    _kill(first_pid, signal.SIGKILL)  # the dispatcher dies with tasks still to start
    assert [j.result(timeout=60) for j in jobs] == ["a", "b", "c"]
    assert int(pid_file.read_text()) != first_pid  # a new one adopted the submission
    for job in jobs:  # and finishes its bookkeeping (before the fixture stops it)
        wait_until(lambda job=job: job.folder.read_exit(job.index) is not None)


REATTACH = textwrap.dedent(
    """
    import sys, jobsub
    from tests import tasks
    ex = jobsub.AutoExecutor(folder=sys.argv[1], cluster="docker")
    ex.update_parameters(**eval(sys.argv[2]), array_parallelism=1)
    jobs = ex.map_array(tasks.sleep_then, [0.3, 0.3, 0.3], ["x", "y", "z"])
    print(jobs[-1].job_id)
    """
)


def test_array_keeps_starting_after_the_client_exits(ex: jobsub.AutoExecutor) -> None:
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", REATTACH, str(ex.folder), repr(docker_env.parameters())],
        capture_output=True, text=True, check=True, cwd=root,
    )
    last: jobsub.Job[str] = jobsub.Job(folder=ex.folder, job_id=out.stdout.strip().splitlines()[-1])
    assert last.result(timeout=60) == "z"


def test_build_image_offline(api: Any, tmp_path: Path) -> None:
    from jobsub.images import build_image

    wheel = _tiny_wheel(tmp_path)
    tag = f"jobsub-test-derived:{os.getpid()}"
    try:
        build_image(tag, [str(wheel)], os.environ["JOBSUB_TEST_IMAGE"], offline=True)
        output = api.create_container(
            tag, ["python3", "-c", "import tinypkg; print(tinypkg.VALUE)"],
            host_config=api.create_host_config(network_mode="none"),
        )["Id"]
        api.start(output)
        assert api.wait(output)["StatusCode"] == 0
        assert api.logs(output).strip() == b"42"
        api.remove_container(output)
    finally:
        api.remove_image(tag, force=True)


def test_image_build_command(api: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``jobsub image build`` with a requirements file, offline; a base that is not there is a clear error."""
    from jobsub.cli import main

    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"# our packages\n{_tiny_wheel(tmp_path)}\n")
    tag = f"jobsub-test-cli:{os.getpid()}"
    base = os.environ["JOBSUB_TEST_IMAGE"]
    try:
        assert main(["image", "build", tag, "--base", base, "-r", str(requirements), "--offline"]) == 0
        assert capsys.readouterr().out.startswith(f"{tag} sha256:")
        out = api.create_container(tag, ["python3", "-c", "import tinypkg; print(tinypkg.VALUE)"])["Id"]
        api.start(out)
        assert api.wait(out)["StatusCode"] == 0 and api.logs(out).strip() == b"42"
        api.remove_container(out)
    finally:
        with contextlib.suppress(Exception):
            api.remove_image(tag, force=True)
    assert main(["image", "build", tag, "--base", "no-such-base:1", "tinypkg"]) == 1
    assert "'no-such-base:1' is not on the engine" in capsys.readouterr().err


def _tiny_wheel(folder: Path) -> Path:
    """A pure-Python wheel made by hand: no build backend, no network."""
    import base64
    import hashlib
    import zipfile

    files = {
        "tinypkg/__init__.py": b"VALUE = 42\n",
        "tinypkg-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n",
        "tinypkg-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for name, data in files.items()
    ]
    files["tinypkg-0.1.dist-info/RECORD"] = ("\n".join([*record, "tinypkg-0.1.dist-info/RECORD,,"]) + "\n").encode()
    path = folder / "tinypkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def test_a_task_whose_upstream_folder_was_deleted_is_cancelled(ex: jobsub.AutoExecutor, tmp_path: Path) -> None:
    """The upstream's folder, mounted read-only into the task's container, is deleted while the
    task waits: the engine would refuse the mount (FAILED); the task is started without it, finds
    it gone and ends CANCELLED with DependencyError, as on every backend.  Real: the engine."""
    local = jobsub.AutoExecutor(tmp_path / "local", cluster="local")
    upstream = local.submit(time.sleep, 3)
    down = ex.submit(abs, upstream)
    shutil.rmtree(upstream.folder.path)
    with pytest.raises(jobsub.DependencyError, match="was deleted"):
        down.result(timeout=120)
    assert down.state is JobState.CANCELLED
