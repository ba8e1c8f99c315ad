"""What a person sees of a backend's jobs, the same on every backend: ``jobsub status`` (its table, its
``--json``, its exit status), ``jobsub logs``, the list ``map_array`` returns, and the progress bar.

Part of ``BackendSuite``: a backend's one test class runs it.
"""

from __future__ import annotations

import json

import pytest

import jobsub
from jobsub.cli import main
from tests import tasks
from tests.conformance.fixtures import BackendFixtures
from tests.conftest import wait_until


class ViewsSuite(BackendFixtures):
    def test_status_table_exit_status_json_and_logs(
        self, executor: jobsub.AutoExecutor, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A failed task makes ``status`` exit 3 and is named with its error's first line, in the table and in JSON."""
        good = executor.map_array(tasks.print_and_return, ["first", "second"])
        bad = executor.submit(tasks.fail, "broken on purpose")
        assert [j.result(timeout=180) for j in good] == ["first", "second"]
        assert isinstance(bad.exception(timeout=180), Exception)
        if self.caps.own_logs:  # a backend's log store may show the output a moment after the end
            wait_until(lambda: "second" in (good[1].stdout() or ""), 60, "the task's output in its log")
        capsys.readouterr()  # what the debug backend's tasks printed here
        folder = str(executor.folder)
        wait_until(lambda: bad.state == "FAILED" and good[1].state == "COMPLETED", 60, "the backend's final states")
        assert main(["status", folder]) == 3
        header, *rows = capsys.readouterr().out.splitlines()
        assert header.split() == ["SUBMISSION", "FUNCTION", "BACKEND", "IDS", "STATES", "AGE", "DURATION", "PEAK",
                                  "MEM", "WHY", "WAITING"]
        assert "\x1b[" not in header + "".join(rows)  # no colour into a pipe
        starts = {row.index(self.cluster) for row in rows if not row.startswith("  ")}
        assert len(starts) == 1, rows  # columns line up however long the ids
        assert any("2 COMPLETED" in row and "print_and_return" in row for row in rows), rows
        assert f"  task 0 ({bad.job_id}) FAILED: ValueError: broken on purpose" in rows, rows
        assert main(["status", "--json", folder]) == 3
        records = {r["function"]: r for r in json.loads(capsys.readouterr().out)}
        assert records["fail"]["failed"] == 1
        assert records["fail"]["failures"][0]["error"] == "ValueError: broken on purpose"
        assert records["print_and_return"]["states"] == {"COMPLETED": 2} and records["print_and_return"]["finished"]
        assert main(["logs", folder, good[0].job_id.rpartition("_")[0], "--task", "1"]) == 0
        captured = capsys.readouterr()
        if self.caps.own_logs:
            assert "second" in captured.out
        else:  # the tasks printed in the process that ran them: no log is kept, and it says so
            assert captured.err == f"jobsub logs: no stdout from job {good[1].job_id} (it ended COMPLETED)\n"
        assert main(["logs", "--json", folder, good[0].job_id]) == 0
        record = json.loads(capsys.readouterr().out)
        assert record["state"] == "COMPLETED" and (not self.caps.own_logs or "first" in record["text"])

    def test_map_array_returns_a_list_that_shows_as_a_summary(self, executor: jobsub.AutoExecutor) -> None:
        jobs = executor.map_array(tasks.fail_on, [0, 1, 2], [1, 1, 1])  # index 1 fails
        assert isinstance(jobs, list) and jobs == list(jobs) and len(jobs[0:2]) == 2
        for job in jobs:
            job.exception(timeout=180)
        wait_until(lambda: [str(j.state) for j in jobs] == ["COMPLETED", "FAILED", "COMPLETED"], 60, "final states")
        assert repr(jobs) == f"JobList<3 job(s) on {self.cluster}: 2 COMPLETED, 1 FAILED>"
        page = jobs._repr_html_()  # type: ignore[attr-defined]
        assert "2 COMPLETED" in page and "1 FAILED" in page and "fail_on" in page
        assert f"task 1 (<code>{jobs[1].job_id}</code>)" in page and "ValueError: task 1 fails" in page
        assert "Traceback" not in page
        assert "ValueError: task 1 fails" in jobs[1]._repr_html_()

    def test_wait_with_a_bar_shows_counts_and_each_failure(
        self, executor: jobsub.AutoExecutor, capsys: pytest.CaptureFixture[str]
    ) -> None:
        jobs = executor.map_array(tasks.fail_on, range(4), [1] * 4)
        capsys.readouterr()
        jobsub.wait(jobs, timeout=180, progress=True)
        err = capsys.readouterr().err
        assert f"task 1 ({jobs[1].job_id}) FAILED: ValueError: task 1 fails" in err, err
        assert "4/4" in err and "3 COMPLETED" in err and "1 FAILED" in err, err
