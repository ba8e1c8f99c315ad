"""Jobs of several backends in one graph, held submissions across processes, and the graph view.

What is the same on every backend (chains, fan-in, failures, cancel cascades, holding behind a
debug job) is in the behaviour suite (tests/conformance/dag.py).  Here: a job of one backend
after a job of another (Docker after Slurm, Slurm after local), held submissions that outlive
the process that made them (killed with SIGKILL) and are released by a new one, two processes
releasing the same submission, and cancel cascades from another process.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import jobsub
from jobsub import JobState
from jobsub.folder import held_keys
from jobsub.storage import open_storage
from tests import docker_env, slurm_env, tasks

ROOT = Path(__file__).resolve().parent.parent
SLURM = {"mem_gb": 0.25}


def _executor(tmp_path: Path, backend: str) -> jobsub.AutoExecutor:
    environment = {"slurm": slurm_env, "docker": docker_env}.get(backend)
    ex = jobsub.AutoExecutor(tmp_path / backend, cluster=backend)
    if environment is not None:
        environment.require()
        ex.update_parameters(**environment.parameters(), **(SLURM if backend == "slurm" else {}))
    return ex


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobsub.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout,
    )


# -- several backends in one graph ---------------------------------------------------------------
@pytest.mark.slurm
@pytest.mark.docker
def test_a_chain_across_local_slurm_and_docker(tmp_path: Path) -> None:
    """Slurm cannot wait for a local job, nor Docker for a Slurm one: each is held, then released."""
    local, slurm, docker = (_executor(tmp_path, b) for b in ("local", "slurm", "docker"))
    first = local.submit(tasks.sleep_then, 2, 1)
    second = slurm.submit(tasks.add, first, 10)
    third = docker.submit(tasks.add, second, 100)
    assert second.state == "HELD" and third.state == "HELD"
    assert third.result(timeout=300) == 111
    assert second.job_id.isdigit()  # released: a Slurm id now
    assert json.loads((second.folder.path / "meta.json").read_text())["submissions"][0]["id"] == second.job_id
    view = jobsub.graph(third)
    assert [n.job.backend for n in view.nodes] == ["local", "slurm", "docker"]
    assert all(n.state is JobState.COMPLETED for n in view.nodes)


@pytest.mark.slurm
def test_a_local_job_after_a_slurm_job_that_fails_or_is_cancelled(tmp_path: Path) -> None:
    """The releaser asks Slurm through the normal poller: a scancel outside jobsub is seen too."""
    slurm, local = _executor(tmp_path, "slurm"), _executor(tmp_path, "local")
    broken = slurm.submit(tasks.fail, "slurm side")
    doomed = local.submit(tasks.add, broken, 1)
    slow = slurm.submit(tasks.sleep_then, 120)
    orphan = local.submit(tasks.add, slow, 1)
    assert doomed.state == "HELD" and orphan.state == "HELD"
    with pytest.raises(jobsub.DependencyError, match="ValueError: slurm side"):
        doomed.result(timeout=180)
    subprocess.run(["scancel", slow.job_id], check=True)
    with pytest.raises(jobsub.DependencyError, match=f"{slow.job_id} was cancelled"):
        orphan.result(timeout=180)
    assert held_keys(open_storage(str(local.folder))) == []  # nothing is left held


# -- held submissions outlive their process ------------------------------------------------------------
_HOLD_AND_DIE = textwrap.dedent(
    """
    import json, sys, jobsub
    from tests import tasks
    slurm = jobsub.AutoExecutor(sys.argv[1] + "/slurm", cluster="slurm", mem_gb=0.25)
    local = jobsub.AutoExecutor(sys.argv[1] + "/local", cluster="local")
    up = slurm.submit(tasks.sleep_then, 4, 5)
    down = local.submit(tasks.append_line, sys.argv[1] + "/ran.txt", "down")
    after = local.submit(tasks.add, up, down)
    print(json.dumps({"up": up.job_id, "after": after.job_id, "state": str(after.state)}), flush=True)
    import time; time.sleep(600)
    """
)


@pytest.mark.slurm
def test_held_submission_released_by_a_new_process_after_a_sigkill(tmp_path: Path) -> None:
    slurm_env.require()
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_AND_DIE, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    made = json.loads(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)  # before its Slurm upstream ended: nothing of the hold is in memory only
    proc.wait()
    proc.stdout.close()
    assert made["state"] == "HELD"
    status = _cli("status", str(tmp_path / "local"))
    assert "HELD" in status.stdout and f"waiting for {made['up']}" in status.stdout
    attached = _cli("attach", str(tmp_path / "local"), "--interval", "0.5")
    assert attached.returncode == 0, attached.stderr
    assert "released as" in attached.stdout
    job: jobsub.Job[Any] = jobsub.Job(tmp_path / "local", made["after"])
    assert job.result(timeout=120) == 6
    assert (tmp_path / "ran.txt").read_text() == "down\n"


def test_two_processes_release_a_held_submission_once(tmp_path: Path) -> None:
    """The release is claimed by creating a file once: of two processes, one submits."""
    upstream_ex = jobsub.AutoExecutor(tmp_path / "debug", cluster="debug")
    local = _executor(tmp_path, "local")
    gate = upstream_ex.submit(tasks.add, 1, 2)
    held = local.submit(tasks.append_line, str(tmp_path / "ran.txt"), "once")
    after = local.submit(tasks.add, gate, held)
    assert after.state == "HELD"
    gate.result()  # the debug upstream ran: the hold may be released by anyone now
    watchers = [
        subprocess.Popen([sys.executable, "-m", "jobsub.cli", "attach", str(local.folder), "--interval", "0.1"],
                         stdout=subprocess.PIPE, text=True, cwd=ROOT)
        for _ in range(3)
    ]
    outs = [w.communicate(timeout=120)[0] for w in watchers]
    assert after.result(timeout=120) == 4
    meta = after.folder.read_meta()
    assert len(meta["submissions"]) == 1 and len(after.folder.release_claims()) == 1
    assert sum("released as" in out for out in outs) <= 1, outs  # only the claimant says it released it
    told = ("released as", "released by another process as", "no held submissions")
    assert all(any(t in out for t in told) for out in outs), outs
    assert (tmp_path / "ran.txt").read_text() == "once\n"


_HELD_BEHIND_SLURM = textwrap.dedent(
    """
    import sys, jobsub
    from tests import tasks
    slurm = jobsub.AutoExecutor(sys.argv[1] + "/slurm", cluster="slurm")
    slurm.update_parameters(mem_gb=0.25)
    local = jobsub.AutoExecutor(sys.argv[1] + "/local", cluster="local")
    held = local.submit(tasks.add, slurm.submit(tasks.sleep_then, 3, 1), 1)
    print(held.job_id)
    """
)


@pytest.mark.slurm
def test_of_three_watchers_only_the_one_that_released_says_so(tmp_path: Path) -> None:
    """Made by a process that exits at once, watched by three: one claim, one submission, one "released as"."""
    slurm_env.require()
    made = subprocess.run([sys.executable, "-c", _HELD_BEHIND_SLURM, str(tmp_path)],
                          capture_output=True, text=True, check=True, cwd=ROOT, timeout=120)
    held_id = made.stdout.strip()
    watchers = [
        subprocess.Popen([sys.executable, "-m", "jobsub.cli", "attach", str(tmp_path / "local"), "--interval", "0.1"],
                         stdout=subprocess.PIPE, text=True, cwd=ROOT)
        for _ in range(3)
    ]
    outs = [w.communicate(timeout=180)[0] for w in watchers]
    assert all("1 held submission(s)" in out for out in outs), outs  # each saw it held
    assert sum("released as" in out for out in outs) == 1, outs
    assert sum("released by another process as" in out for out in outs) == 2, outs
    job = jobsub.Job(tmp_path / "local", held_id)
    assert job.result(timeout=120) == 2
    assert len(job.folder.read_meta()["submissions"]) == 1 and len(job.folder.release_claims()) == 1


_CHAIN = textwrap.dedent(
    """
    import json, sys, jobsub
    from tests import tasks
    ex = jobsub.AutoExecutor(sys.argv[1], cluster="local")
    a = ex.submit(tasks.sleep_then, 120)
    b = ex.submit(tasks.add, a, 1)
    c = ex.submit(tasks.total, [b], extra={})
    print(json.dumps([a.job_id, b.job_id, c.job_id]))
    """
)


def test_cancel_from_another_process_reaches_the_jobs_waiting(tmp_path: Path) -> None:
    folder = tmp_path / "runs"
    made = subprocess.run([sys.executable, "-c", _CHAIN, str(folder)], capture_output=True, text=True, check=True, cwd=ROOT)
    a, b, c = json.loads(made.stdout)
    out = _cli("cancel", str(folder), a)
    assert f"{a}: cancelled" in out.stdout
    for job_id in (b, c):
        with pytest.raises(jobsub.DependencyError, match="was cancelled"):
            jobsub.Job(folder, job_id).result(timeout=60)


# -- the view ------------------------------------------------------------------------------------------
def test_graph_view(tmp_path: Path) -> None:
    upstream_ex = jobsub.AutoExecutor(tmp_path / "debug", cluster="debug")
    local = _executor(tmp_path, "local")
    gate = upstream_ex.submit(tasks.add, 1, 2)
    ok = local.submit(tasks.add, 1, 1)
    held = local.submit(tasks.total, [gate, ok], extra={})
    ok.wait(timeout=60)
    view = jobsub.graph(held)
    assert {n.function for n in view.nodes} == {"add", "total"}
    assert len(view.nodes) == 3 and len(view.edges) == 2
    assert view.nodes[-1].job.job_id == held.job_id and view.nodes[-1].state is JobState.HELD
    line = view.text().splitlines()[-1]
    assert f"HELD (waiting for {gate.job_id})" in line and line.endswith(f"<- {gate.job_id}, {ok.job_id}")
    mermaid = view.mermaid()
    assert mermaid.count("-->") == 2 and ":::held" in mermaid and ":::completed" in mermaid
    assert view._repr_markdown_().startswith("```mermaid") and "<table>" in view._repr_html_()
    assert held.result(timeout=60) == 5
    assert "HELD" not in jobsub.graph(held).text()

    first = local.submit(tasks.add, 1, 1)
    second = local.submit(tasks.add, first, 1)
    second.wait(timeout=60)
    text = _cli("graph", str(local.folder), second.job_id).stdout
    assert first.job_id in text and f"<- {first.job_id}" in text and text.count("COMPLETED") == 2
    assert _cli("graph", str(local.folder), second.job_id, "--mermaid").stdout.startswith("flowchart LR")


_HELD_AT_EXIT = textwrap.dedent(
    """
    import os, sys, jobsub
    debug = jobsub.AutoExecutor(sys.argv[1] + "/debug", cluster="debug")
    local = jobsub.AutoExecutor(sys.argv[1] + "/local", cluster="local")
    up = debug.submit(abs, -1)  # runs only when waited for: what waits on it is held
    kept = local.submit(abs, up)
    ended = local.submit(abs, up)
    ended.cancel()
    print(kept.job_id, ended.job_id, flush=True)
    if os.fork() == 0:  # a child that exits normally runs the exit handlers too
        sys.exit(0)
    os.wait()
    """
)


def test_the_exit_warning_lists_only_what_is_still_held_once(tmp_path: Path) -> None:
    """The warning about held submissions at exit names the one still held, not the one that ended
    (cancelled just before the exit, unseen by the releaser), and is printed once, not again by a
    forked child.  Real: two interpreters (the script and its fork), the debug and local backends."""
    out = subprocess.run(
        [sys.executable, "-c", _HELD_AT_EXIT, str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=120,
        check=True,
    )
    kept, ended = out.stdout.split()
    assert out.stderr.count("not released yet") == 1, out.stderr
    assert kept in out.stderr and ended not in out.stderr, out.stderr


def test_the_edge_to_an_upstream_whose_folder_is_gone_stays(tmp_path: Path) -> None:
    """A graph read from the folders keeps the edge to an upstream whose folder was deleted,
    named by that folder, in the text, the Mermaid drawing and ``jobsub graph``."""
    local = _executor(tmp_path, "local")
    first = local.submit(tasks.add, 1, 1)
    second = local.submit(tasks.add, first, 1)
    assert second.result(timeout=60) == 3
    shutil.rmtree(first.folder.path)
    view = jobsub.graph(jobsub.Job(local.folder, second.job_id))
    assert len(view.nodes) == 1 and len(view.edges) == 1
    assert view.edges[0][0].startswith(first.folder.key) and "folder is gone" in view.text()
    assert view.mermaid().count("-->") == 1 and ":::lost" in view.mermaid()
    text = _cli("graph", str(local.folder), second.job_id).stdout
    assert f"<- {first.folder.key}#0 (its folder is gone)" in text, text
