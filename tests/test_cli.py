"""The ``jobsub`` command on a real local job folder."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import jobsub
from jobsub.cli import main
from tests import slurm_env, tasks
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``jobsub ARGS`` in a new process (``python -m jobsub``), as a shell runs it."""
    return subprocess.run([sys.executable, "-m", "jobsub", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env=env)


def test_status_logs_cancel(local_executor: jobsub.AutoExecutor, capsys: pytest.CaptureFixture[str]) -> None:
    done = local_executor.submit(tasks.print_and_return, "cli text")
    done.result(timeout=30)
    slow = local_executor.submit(tasks.sleep_then, 60)
    assert main(["logs", str(local_executor.folder), done.job_id]) == 0
    assert "cli text" in capsys.readouterr().out
    assert main(["cancel", str(local_executor.folder), slow.job_id]) == 0
    assert "cancelled" in capsys.readouterr().out
    with pytest.raises(jobsub.JobCancelledError):
        slow.result(timeout=30)
    assert main(["status", str(local_executor.folder)]) == 3  # a task ended other than COMPLETED
    out = capsys.readouterr().out
    assert "1 COMPLETED" in out and "1 CANCELLED" in out


def test_logs_of_a_whole_array_says_how_to_name_a_task(
    local_executor: jobsub.AutoExecutor, capsys: pytest.CaptureFixture[str],
) -> None:
    jobs = local_executor.map_array(tasks.print_and_return, ["a", "b"])
    array_id = jobs[0].job_id.rpartition("_")[0]
    folder = str(local_executor.folder)
    assert main(["logs", folder, array_id]) == 1
    assert f"here: jobsub logs {folder} {array_id} --task I" in capsys.readouterr().err
    jobsub.wait(jobs)
    assert main(["logs", folder, array_id, "--task", "1"]) == 0
    assert "b" in capsys.readouterr().out


def test_status_of_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", str(tmp_path)]) == 1
    assert f"no jobsub submissions in {tmp_path}" in capsys.readouterr().err


def test_status_of_a_folder_that_does_not_exist_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped folder is named as missing, not as a folder without submissions."""
    assert main(["status", str(tmp_path / "rnus")]) == 1
    assert f"jobsub status: {tmp_path / 'rnus'} does not exist" in capsys.readouterr().err


def test_status_of_running_submissions_and_nested_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every submission gets a real state (not UNKNOWN), from the folder as the executor was given it or a parent."""
    ex = jobsub.AutoExecutor(folder=tmp_path / "runs" / "sweep" / "%j", cluster="local")
    ex.update_parameters(array_parallelism=1)
    slow = ex.map_array(tasks.sleep_then, [30, 30])
    other = ex.submit(tasks.sleep_then, 30)
    try:
        for folder in (tmp_path / "runs" / "sweep" / "%j", tmp_path / "runs"):
            assert main(["status", str(folder)]) == 0
            out = capsys.readouterr().out
            assert "UNKNOWN" not in out and " MB" not in out  # no peak memory before a task ended
            header, *lines = out.splitlines()
            assert header.split()[:3] == ["SUBMISSION", "FUNCTION", "BACKEND"]
            assert len(lines) == 2 and all("PENDING" in line or "RUNNING" in line for line in lines)
    finally:
        for job in (*slow, other):
            job.cancel()


def test_cli_errors_are_one_line(local_executor: jobsub.AutoExecutor, capsys: pytest.CaptureFixture[str]) -> None:
    jobs = local_executor.map_array(tasks.add, [1, 2], [3, 4])
    array_id = jobs[0].job_id.rpartition("_")[0]
    assert main(["logs", str(local_executor.folder), "no-such-job"]) == 1
    assert capsys.readouterr().err.startswith("jobsub logs: no job 'no-such-job' was submitted with folder")
    assert main(["logs", str(local_executor.folder), array_id]) == 1
    assert f"is an array of 2 tasks: name one, {array_id}_0 to {array_id}_1" in capsys.readouterr().err
    for bad in (f"{array_id}_x", f"{array_id}_7"):  # not a task of the array: never a job pending forever
        assert main(["logs", str(local_executor.folder), bad]) == 1
        assert capsys.readouterr().err == f"jobsub logs: '{bad}': array {array_id} has tasks {array_id}_0 to {array_id}_1\n"


def test_cancel_an_array_by_its_id_and_go_on_after_a_bad_id(
    local_executor: jobsub.AutoExecutor, capsys: pytest.CaptureFixture[str]
) -> None:
    local_executor.update_parameters(array_parallelism=1)
    array = local_executor.map_array(tasks.sleep_then, [60, 60, 60])
    single = local_executor.submit(tasks.sleep_then, 60)
    array_id = array[0].job_id.rpartition("_")[0]
    assert main(["cancel", str(local_executor.folder), array_id, "no-such-job", single.job_id]) == 1
    captured = capsys.readouterr()
    assert f"{array_id}: cancelled" in captured.out and f"{single.job_id}: cancelled" in captured.out
    assert "jobsub cancel: no job 'no-such-job'" in captured.err
    for job in (*array, single):
        with pytest.raises(jobsub.JobCancelledError):
            job.result(timeout=30)


def test_cancel_reaches_the_server_that_holds_the_job(local_executor: jobsub.AutoExecutor, tmp_path: Path) -> None:
    """A process whose own default fork server differs (another interpreter, JOBSUB_LOCAL_DIR) still cancels."""
    job = local_executor.submit(tasks.sleep_then, 60)
    elsewhere = tmp_path / "elsewhere"
    code = f"import jobsub; print(jobsub.Job({str(local_executor.folder)!r}, {job.job_id!r}).cancel())"
    env = {**os.environ, "JOBSUB_LOCAL_DIR": str(elsewhere)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    with pytest.raises(jobsub.JobCancelledError):
        job.result(timeout=30)
    assert not list(elsewhere.glob("*.sock"))  # no second server was started for the cancel
    again = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert again.stdout.strip() == "False"  # it has ended: nothing to cancel


_HELD_BEHIND_SLURM = """
import sys, jobsub
from tests import tasks
from tests import slurm_env
slurm = jobsub.AutoExecutor(sys.argv[1] + "/slurm", cluster="slurm")
slurm.update_parameters(mem_gb=0.25, **slurm_env.parameters())
up = slurm.submit(tasks.add, 1, 1)
local = jobsub.AutoExecutor(sys.argv[1] + "/local", cluster="local")
print(up.job_id, local.submit(tasks.add, up, 1).job_id)
"""


@pytest.mark.slurm
@pytest.mark.parametrize("command", [["attach", "--once"], ["status"]])
def test_a_one_look_command_releases_a_held_submission_whose_upstream_succeeded(
    tmp_path: Path, command: list[str]
) -> None:
    """Issue 26 item 6: the background releaser these commands start must not make their own look a no-op.

    Real: a Slurm upstream, a local downstream held behind it by a process that exited at once.
    """
    slurm_env.require()
    made = subprocess.run([sys.executable, "-c", _HELD_BEHIND_SLURM, str(tmp_path)],
                          capture_output=True, text=True, check=True, cwd=ROOT, timeout=120)
    up_id, held_id = made.stdout.split()
    wait_until(lambda: jobsub.Job(tmp_path / "slurm", up_id).done(), timeout=120, what="the Slurm upstream ends")
    ran = _cli(*command[:1], str(tmp_path / "local"), *command[1:])
    assert ran.returncode == 0, ran.stderr
    if command[0] == "attach":
        assert "released as" in ran.stdout, ran.stdout
    meta = jobsub.Job(tmp_path / "local", held_id).folder.read_meta()
    assert meta.get("submissions"), f"still held after `jobsub {' '.join(command)}`: {ran.stdout}"
    assert jobsub.Job(tmp_path / "local", held_id).result(timeout=120) == 3


# -- issue 26 item 11, issue 29: one line per error, exit statuses, the table, --json ------------------------
def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], cause: str) -> None:
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err, captured.err
    assert captured.err.startswith(f"jobsub {argv[0]}: ") and cause in captured.err, captured.err


@pytest.mark.parametrize("command", ["status", "attach", "clean"])
def test_an_unreadable_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    extra = ["--failed"] if command == "clean" else []
    _one_line_error(capsys, [command, str(loop), *extra], "Too many levels of symbolic links")
    _one_line_error(capsys, [command, str(tmp_path / ("x" * 300)), *extra], "File name too long")


def test_a_malformed_url_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(capsys, ["status", "s3://"], "names no bucket")
    _one_line_error(capsys, ["status", "ftp://host/runs"], "unknown storage scheme 'ftp'")
    _one_line_error(capsys, ["logs", "s3://", "123"], "names no bucket")


def test_a_missing_bucket_and_missing_credentials_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Real: moto's S3 server (scripts/start-moto.sh) answers NoSuchBucket; boto3's own credential chain."""
    if not os.environ.get("AWS_ENDPOINT_URL"):
        pytest.skip("no S3 endpoint (AWS_ENDPOINT_URL: scripts/start-moto.sh)")
    _one_line_error(capsys, ["status", "s3://jobsub-no-such-bucket/runs"], "bucket 'jobsub-no-such-bucket' does not exist")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") or k == "AWS_ENDPOINT_URL"}
    env.update(AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_CONFIG_FILE="/nonexistent", AWS_DEFAULT_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true")
    ran = _cli("status", "s3://jobsub-any-bucket/runs", env=env)
    assert ran.returncode == 1 and ran.stdout == "", ran
    assert ran.stderr.count("\n") == 1 and "no usable AWS credentials" in ran.stderr, ran.stderr


def test_status_watch_refreshes_until_every_task_ended(local_executor: jobsub.AutoExecutor) -> None:
    job = local_executor.submit(tasks.sleep_then, 2, "slept")
    ran = _cli("status", "--watch", "--interval", "0.3", str(local_executor.folder), timeout=120)
    assert ran.returncode == 0, ran.stderr
    tables = [t for t in ran.stdout.split("\n\n") if t.strip()]
    assert len(tables) >= 2 and ("RUNNING" in tables[0] or "PENDING" in tables[0]), ran.stdout
    assert "1 COMPLETED" in tables[-1] and job.result() == "slept"


def test_logs_say_when_there_is_no_output_yet_and_follow(
    local_executor: jobsub.AutoExecutor, capsys: pytest.CaptureFixture[str]
) -> None:
    local_executor.update_parameters(array_parallelism=1)
    blocker, job = local_executor.map_array(tasks.sleep_then, [1, 0.1], ["a", "b"])
    assert main(["logs", str(local_executor.folder), job.job_id]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and f"no stdout from job {job.job_id} yet (it is PENDING)" in captured.err
    ran = _cli("logs", "--follow", str(local_executor.folder), blocker.job_id, timeout=120)
    assert ran.returncode == 0 and blocker.done()


def test_clean_removes_finished_submissions_never_a_running_one(
    local_executor: jobsub.AutoExecutor, capsys: pytest.CaptureFixture[str]
) -> None:
    ok = local_executor.submit(tasks.add, 1, 2)
    bad = local_executor.submit(tasks.fail, "x")
    running = local_executor.submit(tasks.sleep_then, 60)
    ok.result(timeout=60)
    bad.exception(timeout=60)
    folder = str(local_executor.folder)
    assert main(["clean", folder, "--older-than", "0", "--dry-run"]) == 0
    assert "would remove 2 finished submission(s); 1 not finished kept" in capsys.readouterr().out
    assert ok.folder.exists() and bad.folder.exists()
    assert main(["clean", folder, "--failed", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["removed"] == [bad.folder.key]
    assert ok.folder.exists() and not bad.folder.exists() and running.folder.exists()
    assert main(["clean", folder, "--older-than", "0"]) == 0
    assert not ok.folder.exists() and running.folder.exists() and not running.done()
    running.cancel()
    with pytest.raises(SystemExit) as exited:
        main(["clean", folder])
    assert exited.value.code == 2


def test_attach_once_exits_as_status_does(local_executor: jobsub.AutoExecutor, capsys: pytest.CaptureFixture[str]) -> None:
    """A cron job's `jobsub attach runs --once || alert`: nothing held, but a task failed: 3, naming it."""
    assert local_executor.submit(tasks.add, 1, 2).result(timeout=60) == 3
    folder = str(local_executor.folder)
    assert main(["attach", folder, "--once"]) == 0
    assert "no held submissions" in capsys.readouterr().out
    bad = local_executor.submit(tasks.fail, "x")
    bad.exception(timeout=60)
    assert main(["attach", folder, "--once"]) == 3 == main(["status", folder])
    out = capsys.readouterr().out
    assert f"task 0 ({bad.job_id}) FAILED" in out, out


@pytest.mark.slurm
def test_clean_leaves_no_id_link_nor_id_index_of_what_it_removed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real: Slurm, whose job ids are not folder keys, so ``runs/%j`` makes links and ``.ids/`` entries."""
    slurm_env.require()
    template = str(tmp_path / "runs" / "%j")
    executor = jobsub.AutoExecutor(template, cluster="slurm")
    executor.update_parameters(mem_gb=0.25, **slurm_env.parameters())
    gone = executor.submit(tasks.fail, "x")
    kept = executor.submit(tasks.add, 1, 2)
    assert kept.result(timeout=120) == 3
    with pytest.raises(jobsub.FailedJobError):
        gone.result(timeout=120)
    runs = tmp_path / "runs"
    assert (runs / gone.job_id).is_symlink() and (runs / ".ids" / gone.job_id).exists()
    assert main(["clean", template, "--failed"]) == 0
    assert "removed 1 finished submission(s)" in capsys.readouterr().out
    assert not gone.folder.exists()
    assert not os.path.lexists(runs / gone.job_id), "the %j link of a removed submission"
    assert not (runs / ".ids" / gone.job_id).exists(), "the id index entry of a removed submission"
    with pytest.raises(FileNotFoundError):
        jobsub.Job(runs, gone.job_id)
    assert (runs / kept.job_id).is_symlink() and (runs / ".ids" / kept.job_id).exists()
    assert jobsub.Job(runs, kept.job_id).result() == 3
    assert main(["clean", str(runs), "--older-than", "0"]) == 0  # the root, not the template: the links go too
    assert [p.name for p in runs.iterdir() if not p.name.startswith(".")] == []  # no folder, no link
    assert list((runs / ".ids").iterdir()) == []


def test_info_version_and_python_m_jobsub(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    usable = {row["backend"]: row for row in found["backends"]}
    assert usable["local"]["usable"] and usable["debug"]["usable"] and found["version"] == jobsub.__version__
    missing = [row for row in found["backends"] if not row["usable"]]
    assert all(row["missing"] for row in missing)
    ran = _cli("--version")
    assert ran.returncode == 0 and ran.stdout.strip() == f"jobsub {jobsub.__version__}"
    ran = _cli("info")
    assert ran.returncode == 0 and "local" in ran.stdout and "usable" in ran.stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")
def test_status_watch_in_a_terminal_redraws_in_place_in_colour(local_executor: jobsub.AutoExecutor, tmp_path: Path) -> None:
    """Real: tmux runs `jobsub status --watch` in a 150x16 terminal; its screen is captured (kept as evidence:
    $JOBSUB_EVIDENCE_DIR/status-watch.txt when set)."""
    local_executor.update_parameters(array_parallelism=2)
    jobs = local_executor.map_array(tasks.sleep_then, [2, 2, 3, 3], range(4))
    broken = local_executor.submit(tasks.fail, "a task that fails on purpose")
    broken.exception(timeout=60)
    session = f"jobsub-test-{os.getpid()}"
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in os.environ.items()
                   if k in ("PYTHONPATH", "JOBSUB_LOCAL_DIR", "PATH", "HOME"))
    command = f"env -u NO_COLOR {env} {sys.executable} -m jobsub status --watch --interval 0.3 {local_executor.folder}"
    tmux = ["tmux", "-L", session]
    subprocess.run([*tmux, "new-session", "-d", "-s", session, "-x", "150", "-y", "16", "-e", "TERM=xterm-256color",
                    "sh", "-c", f"cd {ROOT} && {command}; echo exit=$?; sleep 60"], check=True, cwd=ROOT)
    try:
        def screen() -> str:
            return subprocess.run([*tmux, "capture-pane", "-p", "-e", "-t", session], capture_output=True, text=True,
                                  check=True).stdout

        wait_until(lambda: "RUNNING" in screen(), 60, "a table with running tasks")
        live = screen()
        wait_until(lambda: "exit=" in screen(), 120, "jobsub status --watch to end")
        final = screen()
    finally:
        subprocess.run([*tmux, "kill-server"], check=False)
    evidence = os.environ.get("JOBSUB_EVIDENCE_DIR")
    if evidence:
        Path(evidence).mkdir(parents=True, exist_ok=True)
        (Path(evidence) / "status-watch.txt").write_text(live + "\n----- at the end -----\n" + final)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", live)
    assert plain.count("SUBMISSION") == 1, plain  # redrawn in place: one table on the screen, not one per look
    assert plain.lstrip().startswith("every 0.3s: jobsub status"), plain
    assert "\x1b[36m" in live and "RUNNING" in plain  # coloured states on a terminal
    assert "FAILED: ValueError: a task that fails on purpose" in plain, plain
    assert "exit=3" in final and "4 COMPLETED" in re.sub(r"\x1b\[[0-9;]*m", "", final), final
    assert all(job.done() for job in jobs)


_FAILING_AFTER_SLURM = _HELD_BEHIND_SLURM.replace("local.submit(tasks.add, up, 1)", "local.submit(tasks.fail, up)")


@pytest.mark.slurm
def test_attach_waits_for_what_it_released_and_exits_3_when_it_failed(tmp_path: Path) -> None:
    """Real: a Slurm upstream, a held local downstream that raises once released."""
    slurm_env.require()
    made = subprocess.run([sys.executable, "-c", _FAILING_AFTER_SLURM, str(tmp_path)],
                          capture_output=True, text=True, check=True, cwd=ROOT, timeout=120)
    _up_id, held_id = made.stdout.split()
    ran = _cli("attach", str(tmp_path / "local"), "--interval", "0.2")
    assert ran.returncode == 3, (ran.stdout, ran.stderr)
    assert "released as" in ran.stdout and "FAILED: ValueError: 2" in ran.stdout, ran.stdout
    assert isinstance(jobsub.Job(tmp_path / "local", held_id).exception(timeout=60), jobsub.FailedJobError)
