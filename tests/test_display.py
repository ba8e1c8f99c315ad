"""How jobs look: readable reprs, notebook HTML, the status table's colour (issue 29)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import jobsub
from jobsub.display import colour_enabled, duration, status_table
from jobsub.report import report
from tests import tasks


def test_states_read_as_their_names() -> None:
    assert repr(jobsub.JobState.FAILED) == "FAILED" and str(jobsub.JobState.FAILED) == "FAILED"
    assert repr([jobsub.JobState.COMPLETED, jobsub.JobState.HELD]) == "[COMPLETED, HELD]"


def test_an_executor_shows_its_backend_folder_and_parameters(tmp_path: Path) -> None:
    ex = jobsub.AutoExecutor(tmp_path / "runs", cluster="local", timeout_min=5, cpus_per_task=2)
    assert repr(ex) == (f"AutoExecutor(folder={str(tmp_path / 'runs')!r}, backend='local', "
                        "parameters={'timeout_min': 5.0, 'cpus_per_task': 2})")
    page = ex._repr_html_()
    assert "<code>local</code>" in page and "timeout_min" in page and str(tmp_path / "runs") in page


def test_colour_only_on_a_terminal_and_never_with_no_color(
    local_executor: jobsub.AutoExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = local_executor.submit(tasks.fail, "red")
    job.exception(timeout=60)
    summary = report([job])
    leader, follower = os.openpty()
    with open(follower, "w") as terminal:
        monkeypatch.delenv("NO_COLOR", raising=False)
        monkeypatch.setenv("TERM", "xterm")
        assert colour_enabled(terminal)
        assert "\x1b[31m1 FAILED\x1b[0m" in status_table([summary], colour=colour_enabled(terminal))
        monkeypatch.setenv("NO_COLOR", "1")
        assert not colour_enabled(terminal)
    os.close(leader)
    with open(os.devnull, "w") as pipe:
        monkeypatch.delenv("NO_COLOR")
        assert not colour_enabled(pipe)


def test_durations_are_short() -> None:
    assert [duration(s) for s in (None, 0.25, 4.25, 42, 185, 7800, 3 * 86400 + 4 * 3600)] == [
        "-", "250ms", "4.2s", "42s", "3m05s", "2h10m", "3d4h"
    ]


_SCRIPT = """
import sys, jobsub

def helper(x):
    return 1 / x

def compute(x):
    y = x - 1
    return helper(y)

ex = jobsub.AutoExecutor(sys.argv[1], cluster=sys.argv[2])
ex.submit(compute, 1).result(timeout=60)
"""


@pytest.mark.parametrize("cluster", ["local", "debug"])
def test_a_remote_traceback_of_main_code_shows_its_lines_once(tmp_path: Path, cluster: str) -> None:
    """Code in ``__main__`` travels by value (cloudpickle calls its file ``<dynamic-code>``): the client names it."""
    import subprocess
    import sys

    script = tmp_path / "sweep.py"
    script.write_text(_SCRIPT)
    ran = subprocess.run([sys.executable, str(script), str(tmp_path / "runs"), cluster],
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent)
    err = ran.stderr
    if cluster == "debug":  # the task ran here and logged its own (raw) traceback first: what is raised follows
        err = err[err.index("RemoteTraceback"):]
    assert ran.returncode == 1 and "<dynamic-code>" not in err, err
    assert f'File "{script}", line 9, in compute\n    return helper(y)\n' in err, err
    assert f'File "{script}", line 5, in helper\n    return 1 / x\n' in err, err
    assert err.count("in helper") == 1, err  # once, not also as the cause of the exception
    assert err.count("/jobsub/") <= 2, err  # the one frame of result() (and a log path), none of jobsub's middle


def test_summary_plots_each_task_queued_and_running_by_state(local_executor: jobsub.AutoExecutor, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="jobsub.summary draws with matplotlib (the test extra installs it)")
    from jobsub.timeline import timeline

    local_executor.update_parameters(array_parallelism=2)
    jobs = local_executor.map_array(tasks.fail_on, range(4), [3] * 4)
    jobsub.wait(jobs, timeout=60, progress=False)
    spans = timeline(jobs)
    assert [s.state for s in spans] == ["COMPLETED"] * 3 + ["FAILED"]
    assert min(s.submitted for s in spans) == 0.0
    assert all(s.started is not None and s.ended is not None and s.submitted <= s.started <= s.ended for s in spans)
    figure = jobsub.summary(jobs)
    (ax,) = figure.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == [j.job_id for j in jobs]
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["1 FAILED", "3 COMPLETED"]
    figure.savefig(tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 1000
