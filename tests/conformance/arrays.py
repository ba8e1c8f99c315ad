"""The array tracker's lifecycle (jobsub.cloud.arrays), told by a scheduler the test scripts.

A cloud backend with no emulator still has its lifecycle tested here: counts
and the children listed to explain them, a job the scheduler forgets, one
that pends forever, throttling.  ``Script`` is the scheduler's world as a
test sets it; a backend opts in with one class whose ``scheduler`` fixture is
its own ``Scheduler`` over a fake SDK client answering from the script in
the provider's shapes (``FakeScheduler`` is the reference, in jobsub's terms)::

    class TestMyTracker(ArrayTrackerSuite):
        @pytest.fixture
        def scheduler(self, script: Script) -> Scheduler:
            return MyScheduler(MyGateway(client=FakeMyClient(script)))

What is real: the tracker, the gateway's pacing and retries, the folder (in
memory).  What is played: the scheduler's answers.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from jobsub.cloud.arrays import RUNNING_PAGES_MAX, ArrayTracker, Parent, PendingTooLong, Scheduler
from jobsub.cloud.gateway import Gateway
from jobsub.errors import BackendError
from jobsub.folder import JobFolder, register_id
from jobsub.states import JobState, Status
from jobsub.storage import MemoryStorage

P, R, C, F = JobState.PENDING, JobState.RUNNING, JobState.COMPLETED, JobState.FAILED


class Throttled(Exception):
    """The scripted scheduler's "slow down" (a provider's 429)."""


@dataclass
class ScriptedJob:
    """One job of the script: its children's states (one child: a plain job unless ``array``)."""

    children: list[JobState]
    array: bool
    queued: str | None = None
    """The scheduler's reason while it waits for capacity, nothing started."""
    cancelled: str = ""
    exit_codes: dict[int, int] = field(default_factory=dict)


class Script:
    """The scheduler's world: jobs, their children's states, and faults to come."""

    def __init__(self) -> None:
        self.jobs: dict[str, ScriptedJob] = {}
        self.throttle = 0
        """How many of the next calls answer "slow down"."""
        self.calls: collections.Counter[str] = collections.Counter()
        """Calls by kind: "describe", "list", "cancel", "throttled"."""
        self.described: list[int] = []
        """How many jobs each describe call asked for."""

    def array(self, job_id: str, children: Sequence[JobState], **codes: int) -> None:
        self.jobs[job_id] = ScriptedJob(list(children), True, exit_codes={int(k[1:]): v for k, v in codes.items()})

    def plain(self, job_id: str, state: JobState, exit_code: int = 0) -> None:
        self.jobs[job_id] = ScriptedJob([state], False, exit_codes={0: exit_code})

    def queue(self, job_id: str, size: int, reason: str) -> None:
        self.jobs[job_id] = ScriptedJob([P] * size, size > 1, queued=reason)

    def forget(self, job_id: str) -> None:
        del self.jobs[job_id]

    def answer(self, kind: str) -> None:
        """Count a call of ``kind``; raise ``Throttled`` while the script says so."""
        if self.throttle:
            self.throttle -= 1
            self.calls["throttled"] += 1
            raise Throttled(f"{kind}: slow down")
        self.calls[kind] += 1

    def cancel(self, job_id: str, reason: str) -> None:
        job = self.jobs[job_id]
        job.cancelled, job.queued = reason, None
        job.children = [s if s.is_final else F for s in job.children]


class ScriptClient:
    """A provider's SDK client answering from the script: a backend's fake says how its provider
    spells "slow down" (``throttled``) and answers each call in the provider's shapes."""

    def __init__(self, script: Script) -> None:
        self.script = script

    def throttled(self, kind: str, exc: Throttled) -> Exception:
        raise NotImplementedError(f"{type(self).__name__}.throttled")

    def _answer(self, kind: str) -> None:
        """Count a call of ``kind``; the provider's throttling error while the script says so."""
        try:
            self.script.answer(kind)
        except Throttled as exc:
            raise self.throttled(kind, exc) from None


class ScriptGateway(Gateway):
    """The kit's gateway over the script: real pacing and retries, a played client."""

    provider = "script"
    default_rate = 1000.0
    first_delay_s = 0.01

    def make_client(self, service: str) -> Any:
        return None

    def transient(self, exc: BaseException) -> float | None:
        return 0.0 if isinstance(exc, Throttled) else None

    def map_error(self, exc: BaseException, action: str, *, submitting: bool) -> Exception | None:
        return BackendError(f"{action}: {exc}") if isinstance(exc, Throttled) else None


class FakeScheduler:
    """The reference ``Scheduler``: the script's jobs in jobsub's terms."""

    label = "the scripted scheduler"
    describe_max = 100
    list_page = 3  # small: the test of an array too busy to list runs on a few children

    def __init__(self, script: Script) -> None:
        self.script = script
        self.gateway = ScriptGateway()

    def describe(self, parents: Sequence[str]) -> dict[str, Parent]:
        self.gateway.run("describe", lambda: self.script.answer("describe"))
        self.script.described.append(len(parents))
        found = {}
        for job_id in parents:
            job = self.script.jobs.get(job_id)
            if job is not None:
                counts = collections.Counter(job.children)
                ended = all(s.is_final for s in job.children)
                found[job_id] = Parent(
                    job_id, job, job.array, dict(counts), len(job.children), ended, job.queued, job.cancelled,
                )
        return found

    def children(self, parent: Parent, states: Collection[JobState]) -> dict[int, Any]:
        self.gateway.run("list", lambda: self.script.answer("list"))
        job = parent.native
        return {i: (job, i) for i, s in enumerate(job.children) if s in states}

    def status(self, native: Any, parent: Parent) -> Status:
        job, index = native if isinstance(native, tuple) else (native, 0)
        state = job.children[index]
        if state is F:
            return Status(JobState.CANCELLED, job.cancelled) if job.cancelled else Status(F, f"exit code {job.exit_codes.get(index, 1)}")
        return Status(state, job.queued or "")

    def cancel(self, parent: Parent, reason: str) -> None:
        self.gateway.run("cancel", lambda: self.script.answer("cancel"))
        self.script.cancel(parent.id, reason)


def _states(tracker: ArrayTracker, ids: Sequence[str]) -> list[JobState]:
    answer = tracker.states(ids)
    return [answer[i].state for i in ids]


class ArrayTrackerSuite:
    """The tracker's behaviour over ``scheduler``; a backend overrides that fixture only."""

    @pytest.fixture
    def script(self) -> Script:
        return Script()

    @pytest.fixture
    def scheduler(self, script: Script) -> Scheduler:
        return FakeScheduler(script)

    @pytest.fixture
    def storage(self) -> MemoryStorage:
        return MemoryStorage()

    @pytest.fixture
    def tracker(self, scheduler: Scheduler, storage: MemoryStorage) -> ArrayTracker:
        pending = PendingTooLong(lambda: storage, scheduler.label, "pending_timeout_min", "my_pending_timeout_min")
        return ArrayTracker(scheduler, lambda: storage, pending=pending)

    # -- counts and the children they make the tracker list ------------------------------------
    def test_an_arrays_children_from_its_counts(self, script: Script, tracker: ArrayTracker) -> None:
        ids = [f"A_{i}" for i in range(4)]
        script.array("A", [R, P, C, F], c3=3)
        # a success shows as its result (read first by the core): until the array ends, not RUNNING
        assert _states(tracker, ids) == [R, P, P, F]
        assert "exit code 3" in tracker.states(["A_3"])["A_3"].reason
        listed = script.calls["list"]
        assert listed >= 1
        assert _states(tracker, ids) == [R, P, P, F]
        assert script.calls["list"] == listed, "the counts did not move: nothing listed again"
        script.jobs["A"].children[1] = R
        assert _states(tracker, ids) == [R, R, R, F]  # nobody waits: running or ended (the result says)
        script.jobs["A"].children = [C, C, C, F]
        assert _states(tracker, ids) == [C, C, C, F]
        whole = tracker.states(["A"])["A"]
        assert whole.state is F and "1 tasks failed" in whole.reason

    def test_running_and_waiting_children_are_told_apart(self, script: Script, tracker: ArrayTracker) -> None:
        script.array("B", [P, R, P, R])
        assert _states(tracker, [f"B_{i}" for i in range(4)]) == [P, R, P, R]
        assert tracker.states(["B"])["B"].state is R
        script.array("B", [P] * 4)
        assert _states(tracker, ["B_1", "B"]) == [P, P]

    def test_too_many_running_children_to_list_read_running_with_the_counts(
        self, script: Script, tracker: ArrayTracker
    ) -> None:
        busy = RUNNING_PAGES_MAX * tracker.scheduler.list_page + 1  # one more than a poll lists
        script.array("W", [R] * busy + [P] * 2 + [F])
        listed = script.calls["list"]
        states = tracker.states([f"W_{i}" for i in range(busy + 3)])
        assert [states[f"W_{i}"].state for i in range(busy + 2)] == [R] * (busy + 2)
        assert f"{busy} of which run and 2 wait" in states["W_0"].reason
        assert states[f"W_{busy + 2}"].state is F
        assert script.calls["list"] == listed + 1, "only the failed children are listed, not the running ones"

    def test_plain_jobs_and_their_ids(self, script: Script, tracker: ArrayTracker) -> None:
        script.plain("J", R)
        script.array("A", [R, R])
        assert _states(tracker, ["J"]) == [R]
        script.plain("J", F, exit_code=2)
        failed = tracker.states(["J"])["J"]
        assert failed.state is F and "exit code 2" in failed.reason
        join = lambda parent, index: f"{parent}#{index}"  # noqa: E731
        assert (tracker.native_id("A_1", join), tracker.native_id("J_0", join)) == ("A#1", "J")
        assert (tracker.native_id("J", join), tracker.is_array("A"), tracker.is_array("J")) == ("J", True, False)

    def test_describes_are_chunked(self, script: Script, scheduler: Scheduler, tracker: ArrayTracker) -> None:
        for i in range(250):
            script.plain(f"J{i}", R)
        states = tracker.states([f"J{i}" for i in range(250)])
        assert {s.state for s in states.values()} == {R}
        assert sum(script.described) == 250 and max(script.described) <= scheduler.describe_max
        assert len(script.described) == -(-250 // scheduler.describe_max)

    # -- a job the scheduler forgot: the folder decides ----------------------------------------
    def _folder(self, storage: MemoryStorage, job_id: str, count: int, submitted_at: float) -> JobFolder:
        folder = JobFolder.create(storage)
        record = {"id": job_id, "offset": 0, "count": count, "submitted_at": submitted_at}
        folder.write_meta({"backend": "scripted", "parameters": {"specific": {}}, "submissions": [record]})
        register_id(storage, job_id, folder.key)
        return folder

    def test_a_forgotten_job_is_judged_by_its_folder(
        self, script: Script, storage: MemoryStorage, tracker: ArrayTracker
    ) -> None:
        script.array("V", [R, R])
        assert _states(tracker, ["V_0", "V_1"]) == [R, R]
        folder = self._folder(storage, "V", 2, time.time() - 3600)
        folder.write_result(0, 0, b"the result", ok=True)
        script.forget("V")
        forgotten = tracker.states(["V_0", "V_1"])
        assert [forgotten[i].state for i in ("V_0", "V_1")] == [C, JobState.LOST]
        assert "result is in the folder" in forgotten["V_0"].reason
        assert "left no result" in forgotten["V_1"].reason and folder.url in forgotten["V_1"].reason

    def test_a_job_not_listed_yet_waits_out_the_grace_period(
        self, script: Script, storage: MemoryStorage, tracker: ArrayTracker
    ) -> None:
        self._folder(storage, "N", 1, time.time())  # submitted just now: listings lag
        assert _states(tracker, ["N", "X"]) == [P, P]  # X: no folder names it; missed for the first time
        tracker.lost_grace_s = 0.0
        lost = tracker.states(["N", "X"])
        assert [lost["N"].state, lost["X"].state] == [JobState.LOST, JobState.LOST]
        assert "no folder" in lost["X"].reason

    def test_a_damaged_record_spoils_no_poll(
        self, script: Script, storage: MemoryStorage, tracker: ArrayTracker
    ) -> None:
        """A forgotten job whose meta.json is damaged: LOST (after the grace), the other jobs answered."""
        folder = self._folder(storage, "D", 1, time.time() - 3600)
        storage.write_bytes(f"{folder.key}/meta.json", b'{"backend": "scr')  # cut short, as by a full disk
        script.plain("R", R)
        tracker.lost_grace_s = 0.0
        answer = tracker.states(["D", "R"])
        assert (answer["D"].state, answer["R"].state) == (JobState.LOST, R)

    def test_a_forgotten_job_whose_cancel_is_recorded_is_cancelled(
        self, script: Script, storage: MemoryStorage, tracker: ArrayTracker
    ) -> None:
        """Another process cancelled it (``Job.cancel`` records it, then the scheduler forgets the
        job): CANCELLED with the recorded reason, at once (no grace); a result still wins."""
        folder = self._folder(storage, "K", 3, time.time())  # just submitted: within the grace period
        folder.write_exit(0, "CANCELLED", "cancelled by the user")
        folder.write_exit(1, "CANCELLED", "cancelled by the user")
        folder.write_result(1, 0, b"published just before the cancel", ok=True)
        assert _states(tracker, ["K_0", "K_1", "K_2"]) == [JobState.CANCELLED, C, P]
        assert tracker.states(["K_0"])["K_0"].reason == "cancelled by the user"
        tracker.lost_grace_s = 0.0
        assert _states(tracker, ["K_0", "K_2"]) == [JobState.CANCELLED, JobState.LOST]

    def test_a_forgotten_job_whose_end_a_backend_recorded_reads_that_end(
        self, script: Script, storage: MemoryStorage, tracker: ArrayTracker
    ) -> None:
        """A backend ended a job itself (a task preempted too often) and recorded it before deleting
        it (``ForgottenJobs.record_end``): any process reads that state and reason at once, not LOST;
        a task with a result gets no record and reads COMPLETED (after the grace period)."""
        folder = self._folder(storage, "E", 3, time.time())  # just submitted: within the grace period
        folder.write_result(1, 0, b"finished before the end", ok=True)
        tracker.forgotten.record_end("E", {
            0: Status(JobState.PREEMPTED, "evicted 4 times"), 1: Status(F, "not recorded: it has a result"),
        })
        assert folder.read_exit(1) is None
        answer = tracker.states(["E_0", "E_1", "E_2"])
        assert [answer[i].state for i in ("E_0", "E_1", "E_2")] == [JobState.PREEMPTED, P, P]  # no grace for an end
        assert answer["E_0"].reason == "evicted 4 times"
        tracker.lost_grace_s = 0.0
        assert _states(tracker, ["E_0", "E_1", "E_2"]) == [JobState.PREEMPTED, C, JobState.LOST]

    # -- a task cancelled alone, on a scheduler that cancels whole arrays only --------------------
    def test_a_task_cancelled_alone_leaves_its_siblings_running(self, script: Script, tracker: ArrayTracker) -> None:
        script.array("G", [R, P, P])
        ended: list[tuple[str, int | None]] = []
        tracker.cancel(["G_2"], lambda parent, index: ended.append((parent, index)), whole_only=True)
        assert ended == [], "the array runs on: nothing is cancelled at the scheduler"
        answer = tracker.states(["G_0", "G_1", "G_2"])
        assert [answer[i].state for i in ("G_0", "G_1", "G_2")] == [R, P, JobState.CANCELLED]
        assert "the other tasks of its array run on" in answer["G_2"].reason
        tracker.cancel(["G_0", "G_1"], lambda parent, index: ended.append((parent, index)), whole_only=True)
        assert ended == [("G", None)], "every task cancelled: the array itself is"
        tracker.cancel(["G"], lambda parent, index: ended.append((parent, index)), whole_only=True)
        assert ended[-1] == ("G", None), "an array's own id cancels it whole"

    # -- pending too long: cancelled, with the scheduler's reason ------------------------------
    def test_a_job_queued_past_its_limit_is_cancelled_with_the_schedulers_reason(
        self, script: Script, tracker: ArrayTracker
    ) -> None:
        script.queue("Q", 3, "no capacity in the compute environment")
        tracker.submitted("Q", array=True, pending_limit_min=0.0)
        script.queue("W", 3, "no capacity")
        tracker.submitted("W", array=True, pending_limit_min=60.0)
        answer = tracker.states(["Q_0", "Q_2", "W_0"])
        assert [answer[i].state for i in ("Q_0", "Q_2", "W_0")] == [JobState.CANCELLED, JobState.CANCELLED, P]
        reason = answer["Q_0"].reason
        assert "no capacity in the compute environment" in reason and "my_pending_timeout_min" in reason
        assert script.calls["cancel"] == 1 and script.jobs["Q"].cancelled
        again = tracker.states(["Q_1", "Q"])  # as the scheduler tells it since
        assert [again["Q_1"].state, again["Q"].state] == [JobState.CANCELLED, JobState.CANCELLED]
        assert "no capacity in the compute environment" in again["Q"].reason and script.calls["cancel"] == 1

    def test_a_queued_job_pends_with_the_schedulers_reason(self, script: Script, tracker: ArrayTracker) -> None:
        """Under its limit a queued job waits, and says why (``jobsub status``, a long wait's warning)."""
        script.queue("W", 3, "no capacity in the compute environment")
        tracker.submitted("W", array=True, pending_limit_min=60.0)
        script.queue("S", 1, "quota exceeded")
        tracker.submitted("S", array=False, pending_limit_min=60.0)
        answer = tracker.states(["W_0", "W_2", "S"])
        assert [answer[i].state for i in ("W_0", "W_2", "S")] == [P, P, P]
        assert "no capacity in the compute environment" in answer["W_2"].reason
        assert "quota exceeded" in answer["S"].reason

    def test_a_job_cancelled_for_waiting_too_long_reads_cancelled_once_forgotten(
        self, script: Script, scheduler: Scheduler, storage: MemoryStorage, tracker: ArrayTracker
    ) -> None:
        """The cancel of a job queued past its limit is recorded in its folder before the scheduler
        is asked: once the scheduler forgets the job, another process (a fresh tracker: nothing
        shared in memory) reads CANCELLED with the scheduler's reason, not LOST."""
        self._folder(storage, "Q", 2, time.time() - 3600)
        script.queue("Q", 2, "no capacity in the compute environment")
        tracker.submitted("Q", array=True, pending_limit_min=0.0)
        assert _states(tracker, ["Q_0", "Q_1"]) == [JobState.CANCELLED, JobState.CANCELLED]
        script.forget("Q")
        elsewhere = ArrayTracker(scheduler, lambda: storage, lost_grace_s=0.0)
        answer = elsewhere.states(["Q_0", "Q_1"])
        for backend_id in ("Q_0", "Q_1"):
            assert answer[backend_id].state is JobState.CANCELLED, answer[backend_id]
            assert "no capacity in the compute environment" in answer[backend_id].reason

    def test_a_job_cancelled_for_waiting_too_long_reads_its_reason_elsewhere_while_listed(
        self, script: Script, scheduler: Scheduler, storage: MemoryStorage, tracker: ArrayTracker
    ) -> None:
        """While the scheduler still lists the cancelled job, another process reads the reason
        jobsub recorded, not the scheduler's bare word (GCP Batch keeps no reason at all)."""
        self._folder(storage, "Q", 2, time.time() - 3600)
        script.queue("Q", 2, "no capacity in the compute environment")
        tracker.submitted("Q", array=True, pending_limit_min=0.0)
        assert _states(tracker, ["Q_0", "Q_1"]) == [JobState.CANCELLED, JobState.CANCELLED]
        # what a scheduler tells another process: that the job was cancelled, not why
        script.jobs["Q"].cancelled = "cancelled"
        getattr(scheduler, "reasons", {}).clear()
        elsewhere = ArrayTracker(scheduler, lambda: storage, lost_grace_s=0.0)
        for backend_id, status in elsewhere.states(["Q_0", "Q_1", "Q"]).items():
            assert status.state is JobState.CANCELLED, (backend_id, status)
            assert "no capacity in the compute environment" in status.reason, (backend_id, status)

    def test_the_limit_of_another_process_comes_from_the_folder(
        self, script: Script, storage: MemoryStorage, tracker: ArrayTracker
    ) -> None:
        assert tracker.pending is not None
        folder = self._folder(storage, "O", 1, time.time())
        meta = folder.read_meta()
        meta["parameters"]["specific"][tracker.pending.parameter] = 0
        folder.write_meta(meta)
        script.queue("O", 1, "waiting for a GPU")
        status = tracker.states(["O"])["O"]
        assert status.state is JobState.CANCELLED and "waiting for a GPU" in status.reason
        script.plain("S", R)  # started: no clock runs for it
        assert tracker.states(["S"])["S"].state is R and script.calls["cancel"] == 1

    # -- throttling: the gateway's retries, then the backend's error ----------------------------
    def test_throttling_is_retried_then_reported(self, script: Script, tracker: ArrayTracker) -> None:
        script.array("T", [R, P])
        script.throttle = 2
        assert _states(tracker, ["T_0", "T_1"]) == [R, P]
        assert script.calls["throttled"] == 2
        script.throttle = 100
        with pytest.raises(BackendError):
            tracker.states(["T_0"])
        script.throttle = 0
        assert _states(tracker, ["T_0", "T_1"]) == [R, P]  # the views survived the failed poll
