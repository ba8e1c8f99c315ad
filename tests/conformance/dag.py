"""What the DAG layer does on every backend: jobs as arguments, holding, cancel cascades, the
cache and automatic arrays.  ``BehaviourSuite`` inherits it, so every backend that opts into
the behaviour suite runs these too (tests needing more than one process are in
tests/test_graph.py and tests/test_cache.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import jobsub
from jobsub import JobState
from tests import tasks


def _beside(executor: jobsub.AutoExecutor, tmp_path: Path, name: str) -> Any:
    """A folder for another executor where ``executor``'s tasks can read it: on this disk, or
    in the bucket of a backend whose tasks see no disk of this machine."""
    if executor.backend.capabilities.local_folders:
        return tmp_path / name
    return f"{str(executor.folder).rstrip('/')}-{name}"


class DagBehaviour:
    """Mixed into ``BehaviourSuite``; ``executor`` is its fixture."""

    # -- jobs as arguments ---------------------------------------------------------------------
    def test_chain(self, executor: jobsub.AutoExecutor) -> None:
        a = executor.submit(tasks.add, 1, 2)
        b = executor.submit(tasks.add, a, 10)
        c = executor.submit(tasks.add, b, 100)
        assert c.result(timeout=240) == 113
        assert [str(j.state) for j in (a, b, c)] == ["COMPLETED"] * 3

    def test_fan_out_fan_in(self, executor: jobsub.AutoExecutor) -> None:
        root = executor.submit(tasks.add, 1, 1)
        leaves = executor.map_array(tasks.add, [root] * 4, [0, 1, 2, 3])
        total = executor.submit(tasks.total, leaves, extra={"root": root})
        assert total.result(timeout=240) == 2 * 4 + 6 + 2
        view = jobsub.graph(total)
        assert len(view.nodes) == 6 and len(view.edges) == 4 + 4 + 1
        assert view.nodes[0].job.job_id == root.job_id  # upstreams first
        assert f"{total.job_id}" in view.text() and "COMPLETED" in view.text()
        assert view.mermaid().startswith("flowchart LR") and "-->" in view.mermaid()

    def test_failure_propagates_as_dependency_error(self, executor: jobsub.AutoExecutor) -> None:
        """A failed upstream: its dependents, transitively, end CANCELLED without running,
        naming the job that failed and its error."""
        broken = executor.submit(tasks.fail, "upstream broke")
        mid = executor.submit(tasks.add, broken, 1)
        leaf = executor.submit(tasks.add, mid, 1)
        with pytest.raises(jobsub.DependencyError) as info:
            mid.result(timeout=240)
        assert broken.job_id in str(info.value) and "ValueError: upstream broke" in str(info.value)
        assert info.value.state is JobState.CANCELLED and info.value.upstream == broken.job_id
        with pytest.raises(jobsub.DependencyError, match=mid.job_id):
            leaf.result(timeout=240)
        assert mid.state == "CANCELLED" and leaf.state == "CANCELLED"

    def test_cancel_cascades_to_the_jobs_waiting(self, executor: jobsub.AutoExecutor) -> None:
        slow = executor.submit(tasks.sleep_then, 120, "never")
        mid = executor.submit(tasks.add, slow, 1)
        leaf = executor.submit(tasks.add, mid, 1)
        started = time.monotonic()
        assert slow.cancel()
        for job in (mid, leaf):
            with pytest.raises(jobsub.DependencyError, match="was cancelled"):
                job.result(timeout=60)
            assert job.state == "CANCELLED"
        assert time.monotonic() - started < 60
        assert not mid.cancel()  # it ended

    # -- held in the client: an upstream this backend cannot wait for ------------------------------
    def test_held_until_an_upstream_it_cannot_wait_for_succeeds(self, executor: jobsub.AutoExecutor, tmp_path: Path) -> None:
        """A debug job runs when waited for, so no backend (not another debug executor) waits for it:
        the dependent is held in the folder, and released when it has succeeded."""
        upstream_ex = jobsub.AutoExecutor(_beside(executor, tmp_path, "upstream"), cluster="debug")
        first = upstream_ex.submit(tasks.add, 1, 2)
        second = executor.submit(tasks.add, first, 10)
        assert second.state == "HELD"
        assert first.job_id in second.status().reason
        assert second.job_id.startswith(second.folder.key)
        assert jobsub.Job(executor.folder, second.job_id).state == "HELD"  # found by its held name
        assert second.result(timeout=240) == 13  # waiting on it runs the debug upstream, then releases it
        assert second.state == "COMPLETED"

    def test_held_job_ends_when_its_upstream_fails(self, executor: jobsub.AutoExecutor, tmp_path: Path) -> None:
        upstream_ex = jobsub.AutoExecutor(_beside(executor, tmp_path, "upstream"), cluster="debug")
        first = upstream_ex.submit(tasks.fail, "held upstream broke")
        second = executor.submit(tasks.add, first, 10)
        with pytest.raises(jobsub.DependencyError, match="ValueError: held upstream broke") as info:
            second.result(timeout=120)
        assert info.value.upstream == first.job_id
        assert second.state == "CANCELLED" and second.job_id.startswith(second.folder.key)  # never submitted

    def test_cancel_of_a_held_job(self, executor: jobsub.AutoExecutor, tmp_path: Path) -> None:
        upstream_ex = jobsub.AutoExecutor(_beside(executor, tmp_path, "upstream"), cluster="debug")
        first = upstream_ex.submit(tasks.add, 1, 2)
        second = executor.submit(tasks.add, first, 10)
        third = executor.submit(tasks.add, second, 10)
        assert second.cancel() and not second.cancel()
        with pytest.raises(jobsub.JobCancelledError, match="while held"):
            second.result(timeout=60)
        with pytest.raises(jobsub.DependencyError, match=second.job_id):
            third.result(timeout=60)
        assert first.result() == 3  # the upstream is not touched

    # -- the cache ----------------------------------------------------------------------------------
    def test_cache_reattaches_then_returns_the_result(self, executor: jobsub.AutoExecutor) -> None:
        executor.update_parameters(cache=True)
        first = executor.submit(tasks.sleep_then, 1, "cached value")
        again = executor.submit(tasks.sleep_then, 1, "cached value")  # queued or running: reattached
        assert again.job_id == first.job_id and again.cache_key == first.cache_key is not None
        assert first.result(timeout=240) == "cached value"
        hit = executor.submit(tasks.sleep_then, 1, "cached value")
        assert hit.job_id == first.job_id and hit.done() and hit.state == "COMPLETED"
        other = executor.submit(tasks.sleep_then, 1, "another value")
        assert other.job_id != first.job_id and other.cache_key != first.cache_key
        jobs = executor.map_array(tasks.sleep_then, [1, 0], ["cached value", "new"])  # one hit, one submitted
        assert jobs[0].job_id == first.job_id and jobs[1].job_id != first.job_id
        assert [j.result(timeout=240) for j in jobs] == ["cached value", "new"]

    def test_cache_submits_a_failed_call_again(self, executor: jobsub.AutoExecutor) -> None:
        executor.update_parameters(cache=True)
        failed = executor.submit(tasks.fail, "once")
        assert isinstance(failed.exception(timeout=240), (jobsub.FailedJobError, ValueError))
        again = executor.submit(tasks.fail, "once")
        assert again.job_id != failed.job_id and again.cache_key == failed.cache_key

    def test_cache_key_follows_results_not_limits(self, executor: jobsub.AutoExecutor) -> None:
        executor.update_parameters(cache=True)
        first = executor.submit(tasks.add, 2, 2)
        executor.update_parameters(timeout_min=30)  # a limit does not change what the call computes
        assert executor.submit(tasks.add, 2, 2).job_id == first.job_id
        executor.update_parameters(env={"JOBSUB_TEST_FLAVOUR": "b"})  # the environment may
        assert executor.submit(tasks.add, 2, 2).job_id != first.job_id
        downstream = executor.submit(tasks.add, first, 1)  # an upstream job contributes its own key
        assert executor.submit(tasks.add, first, 1).job_id == downstream.job_id
        assert downstream.result(timeout=240) == 5

    # -- automatic arrays ---------------------------------------------------------------------------
    def test_auto_array_coalesces_separate_submits(self, executor: jobsub.AutoExecutor) -> None:
        executor.update_parameters(auto_array=True, auto_array_window_s=0.5)
        jobs = [executor.submit(tasks.add, i, 1) for i in range(5)]
        assert [j.result(timeout=240) for j in jobs] == [1, 2, 3, 4, 5]
        assert len({j.folder.key for j in jobs}) == 1
        assert len(jobs[0].folder.read_meta()["submissions"]) == 1  # ONE backend submission
        assert [j.job_id.rsplit("_", 1)[1] for j in jobs] == ["0", "1", "2", "3", "4"]

    def test_auto_array_flushes_when_a_job_is_used(self, executor: jobsub.AutoExecutor) -> None:
        executor.update_parameters(auto_array=True, auto_array_window_s=30)
        single = executor.submit(tasks.add, 1, 1)
        assert single.job_id  # touching it sends it at once: alone, it is a plain job
        assert single.folder.read_meta()["array"] is False
        pair = [executor.submit(tasks.add, 2, 2), executor.submit(tasks.add, 3, 3)]
        after = executor.submit(tasks.add, pair[1], 1)  # an argument: the pair goes out first
        assert after.result(timeout=240) == 7 and pair[0].result(timeout=240) == 4
        assert pair[0].folder.key == pair[1].folder.key
        assert single.result(timeout=240) == 2
