"""The Slurm backend: sbatch arrays, one squeue + one sacct per poll, shared by processes.

::

    submit ──> <folder>/slurm/<offset>.sh (see script.py) ──> sbatch --parsable ──> "<id>"
                 a transient failure is retried only after squeue shows that the script
                 was not submitted (its path is the job's command): never twice
    states(ids) ──> <root>/.slurm-state.json fresh? (file lock: processes watching the
                 same folder share one poll) ──> else ONE squeue for all ids, and ONE sacct
                 for those squeue no longer shows (or shows FAILED), if any
                 squeue: live states (real time)    sacct: how jobs ended (lags ~2 s;
                 may be disabled: then squeue alone, and result files decide)
    cancel ──> scancel          logs ──> the worker's logs + Slurm's own output file

Two Slurm habits are handled here so that ``result()`` never hangs:
a job whose ``afterok`` dependency failed stays PENDING forever
(DependencyNeverSatisfied): it is cancelled and reported CANCELLED; a
requeued job (checkpoint) is held for 120 s (BeginTime): the poll releases it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import filelock

from ...errors import BackendError, SubmissionError
from ...folder import JobFolder
from ...parameters import Resolved
from ...states import JobState, Status
from ...storage import LocalStorage
from ..base import Backend, Launch
from . import query as q
from .script import SlurmParameters, log_name, sbatch_script

__all__ = ["SlurmBackend", "SlurmParameters"]

logger = logging.getLogger("jobsub.slurm")

CACHE_FILE = ".slurm-state.json"
"""In the executor's folder: {"jobs": {id: [state, reason, answered at, last wanted at]}}."""
_CACHE_VERSION = 1
POLL_RETRIES = 2
"""squeue/sacct retries inside one poll; the poller itself backs off when a poll fails."""
LOST_GRACE_S = 60.0
"""A job neither squeue nor sacct knows is UNKNOWN this long after its submission, then LOST."""
RELEASE_AFTER_S = 3.0
"""A requeued job held by Slurm (BeginTime) is released after this long (see ``_ask``)."""
SACCT_LAG_S = 20.0
"""How long a FAILED job waits for sacct to say whether a step ran out of memory."""
_OOM_IN_LOG = re.compile(r"Exceeded job memory limit|oom-kill|Out Of Memory", re.IGNORECASE)

_max_array_size: int | None = None
_max_array_lock = threading.Lock()


class SlurmBackend(Backend):
    """Runs jobs on a Slurm cluster through sbatch/squeue/sacct/scancel.

    Args:
        root: the executor's folder; it must be on a file system the nodes share.
    """

    name = "slurm"
    Parameters = SlurmParameters
    aliases: ClassVar[Mapping[str, str]] = {
        "job_name": "name",
        "time": "timeout_min",
        "ntasks_per_node": "tasks_per_node",
        "num_gpus": "gpus_per_node",
    }
    task_env: ClassVar[Mapping[str, str]] = {
        "index": "SLURM_ARRAY_TASK_ID",
        "rank": "SLURM_PROCID",
        "local_rank": "SLURM_LOCALID",
        "node": "SLURM_NODEID",
        "num_tasks": "SLURM_NTASKS",
        "num_nodes": "SLURM_JOB_NUM_NODES",
        "job_id": "SLURM_JOB_ID",
        "array_job_id": "SLURM_ARRAY_JOB_ID",
    }
    # slurmctld serves every user of the cluster: ask at most every 2 s (JOBSUB_POLL_INTERVAL
    # overrides); results are noticed sooner, through the result files
    poll_interval_s = 2.0

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self._root = Path(root)
        self._sacct_disabled = False
        self._missing_since: dict[str, float] = {}
        self._final_since: dict[str, float] = {}
        self._held_since: dict[str, float] = {}
        self._cancelled: set[str] = set()
        self._last_query = float("-inf")

    # -- submission -------------------------------------------------------------------------
    def check(self) -> None:
        """Fail early, at executor creation, where Slurm's commands are missing."""
        if shutil.which("sbatch") is None:
            raise BackendError("the slurm backend needs sbatch on PATH (is this a Slurm login node?)")

    def max_array_size(self, params: Resolved) -> int | None:
        """MaxArraySize of the cluster (``scontrol show config``), asked once per process."""
        global _max_array_size
        with _max_array_lock:
            if _max_array_size is None:
                text = q.run(["scontrol", "show", "config"]).stdout
                match = re.search(r"^MaxArraySize\s*=\s*(\d+)", text, re.MULTILINE)
                # indices go from 0 to MaxArraySize - 1: that many tasks fit in one array
                _max_array_size = int(match.group(1)) if match else 1001
            return _max_array_size

    def submit(self, launch: Launch, n_tasks: int, params: Resolved, folder: JobFolder, *, array: bool) -> str:
        """Write ``<folder>/slurm/<offset>.sh`` and sbatch it; return the job (or array) id.

        Raises:
            SubmissionError: sbatch refused it (its own message is in the text), or the
                folder is not a local path the nodes can share.
        """
        path = folder.path
        if path is None:
            raise SubmissionError(f"Slurm jobs need their folder on a shared file system path, not {folder.url}")
        script = path / "slurm" / f"{launch.offset}.sh"
        script.parent.mkdir(mode=0o700, exist_ok=True)
        text = sbatch_script(launch, n_tasks, params, path, array=array)
        # 0700 from the start: the script names the folder holding the job's pickles
        fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        proc = q.run(
            ["sbatch", "--parsable", str(script)],
            error=SubmissionError,
            before_retry=lambda: self._find_submitted(script),
        )
        # --parsable prints "<id>" or "<id>;<cluster>"
        job_id = proc.stdout.strip().split(";", 1)[0]
        if not job_id.isdigit():
            raise SubmissionError(f"cannot read a job id in sbatch's answer {proc.stdout!r}")
        logger.debug("submitted %s as Slurm job %s", script, job_id)
        return job_id

    def _find_submitted(self, script: Path) -> str | None:
        """The id of the job running ``script``, if a failed sbatch call did submit it."""
        try:
            proc = q.run(["squeue", "--me", "-h", "-t", "all", "-O", "ArrayJobID:0|,Command:0"])
        except BackendError as exc:
            raise SubmissionError(
                f"sbatch failed and squeue cannot tell whether {script} was submitted anyway; "
                f"not retrying, to never submit it twice: {exc}"
            ) from exc
        for line in proc.stdout.splitlines():
            job_id, _, cmd = line.partition("|")
            if cmd.strip() == str(script).strip():
                logger.warning("sbatch reported a failure but submitted %s as job %s", script, job_id.strip())
                return job_id.strip()
        return None

    # -- states -------------------------------------------------------------------------------
    def states(self, backend_ids: Sequence[str]) -> dict[str, Status]:
        """States of many jobs: from the shared cache if fresh, else ONE squeue + ONE sacct."""
        ids = list(dict.fromkeys(backend_ids))
        if not ids:
            return {}
        interval = float(os.environ.get("JOBSUB_POLL_INTERVAL") or self.poll_interval_s)
        with self._shared_cache() as cache:
            now = time.time()
            # an answer older than our own last query is one the poller asks to refresh (force)
            hit = _cache_get(cache, ids, newer_than=max(self._last_query, now - interval))
            if hit is not None:
                return hit
            self._last_query = now
            # ask also for what other processes watch: their next poll is then a cache hit
            asked = list(dict.fromkeys([*ids, *_cache_wanted(cache, now, 3 * interval)]))
            answer = self._ask(asked)
            _cache_put(cache, answer, now, ids)
        return {i: answer[i] for i in ids}

    def _ask(self, ids: list[str]) -> dict[str, Status]:
        bases = q.base_ids(ids)
        squeue = q.parse_squeue(
            q.run(
                ["squeue", "-h", "-r", "-t", "all", "-O", q.SQUEUE_FORMAT, "-j", ",".join(bases)],
                retries=POLL_RETRIES,
                accept=lambda p: "Invalid job id specified" in p.stderr,  # when ALL ids are unknown
            ).stdout
        )
        # sacct (slurmdbd, a database query) only for what squeue cannot tell: jobs that left
        # the queue, and FAILED ones (an srun step's out-of-memory shows only in sacct)
        need = [i for i in ids if i not in squeue or squeue[i].state is JobState.FAILED]
        sacct = self._sacct(q.base_ids(need)) if need else {}
        known = {i.split("_", 1)[0] for i in (*squeue, *(sacct or ()))}
        now = time.time()
        answer: dict[str, Status] = {}
        held: list[str] = []
        doomed: list[str] = []
        for backend_id in ids:
            live = squeue.get(backend_id)
            if live is not None and live.state is JobState.PENDING:
                if live.reason == "DependencyNeverSatisfied":
                    doomed.append(backend_id)
                    answer[backend_id] = Status(
                        JobState.CANCELLED,
                        f"a dependency failed ({live.dependency}); jobsub cancelled the job, "
                        "which Slurm would keep pending forever",
                    )
                    continue
                if live.restarts:
                    if live.reason == "BeginTime" and self._release_due(backend_id, now):
                        held.append(backend_id)
                    answer[backend_id] = Status(JobState.REQUEUED, f"requeued {live.restarts} time(s)")
                    continue
            answer[backend_id] = self._combine(backend_id, live, sacct, now, known)
        if held:
            # Slurm holds a requeued job for 120 s; a checkpointed job has nothing to wait for
            self._quietly(["scontrol", "update", f"JobId={','.join(held)}", "StartTime=now"])
        if doomed:
            self._quietly(["scancel", *doomed])
        return answer

    def _release_due(self, backend_id: str, now: float) -> bool:
        """Whether a requeued job Slurm holds (120 s) may be released now.

        Not in the second of the requeue: slurmd would refuse to start it again
        ("Job credential revoked") and the job would end FAILED.
        """
        return now - self._held_since.setdefault(backend_id, now) >= RELEASE_AFTER_S

    def _combine(
        self, backend_id: str, live: q.Row | None, sacct: dict[str, q.Row] | None, now: float, known: set[str]
    ) -> Status:
        """One job's status from squeue (real time) and sacct (how it ended, late).

        ``known`` holds the job ids either command knows: an array task missing from
        both while its array is known was cancelled before it started (Slurm keeps
        no record of those, not even in accounting).
        """
        if live is not None and not live.state.is_final:
            return _status(live)
        acct = sacct.get(backend_id) if sacct is not None else None
        if acct is not None and acct.state.is_final:
            return self._check_oom(backend_id, _status(acct))
        if live is not None:
            if live.state is JobState.FAILED and sacct is not None:
                # under srun an out-of-memory step leaves the job FAILED: only sacct's steps tell
                first = self._final_since.setdefault(backend_id, now)
                if now - first < SACCT_LAG_S:
                    return Status(JobState.RUNNING, "ended; waiting for sacct to say how")
            return self._check_oom(backend_id, _status(live))
        if acct is not None:
            return _status(acct)
        base, array_task, _ = backend_id.partition("_")
        if backend_id in self._cancelled or (array_task and sacct is not None and base in known):
            return Status(JobState.CANCELLED, "cancelled before it started (Slurm keeps no record of it)")
        submitted = self._submitted_at(backend_id) or self._missing_since.setdefault(backend_id, now)
        if now - submitted < LOST_GRACE_S:
            return Status(JobState.UNKNOWN, "not known to Slurm yet")
        why = "squeue and sacct do not know it" if sacct is not None else (
            "squeue does not know it (it forgets jobs MinJobAge after they end) and "
            "Slurm accounting (sacct) is disabled"
        )
        return Status(JobState.LOST, f"Slurm job {backend_id}: {why}")

    def _sacct(self, bases: list[str]) -> dict[str, q.Row] | None:
        """sacct's rows, or None when accounting is disabled on this cluster."""
        if self._sacct_disabled:
            return None
        proc = q.run(
            ["sacct", "-P", "-n", "-o", q.SACCT_FIELDS, "-j", ",".join(bases)],
            retries=POLL_RETRIES,
            accept=lambda p: "accounting storage is disabled" in p.stderr.lower(),
        )
        if "accounting storage is disabled" in proc.stderr.lower():
            logger.info("Slurm accounting is disabled: job states come from squeue alone")
            self._sacct_disabled = True
            return None
        return q.parse_sacct(proc.stdout)

    def _check_oom(self, backend_id: str, status: Status) -> Status:
        """Without memory cgroups Slurm kills a job over --mem and says FAILED; its log says why."""
        if status.state is not JobState.FAILED:
            return status
        log = self._slurm_log(backend_id)
        if log is not None and _OOM_IN_LOG.search(_read_tail(log)):
            return Status(JobState.OUT_OF_MEMORY, f"{status.reason}; Slurm's log: memory limit exceeded")
        return status

    def _key_of(self, backend_id: str) -> str | None:
        with contextlib.suppress(OSError):
            return (self._root / ".ids" / backend_id.split("_", 1)[0]).read_text().strip()
        return None

    def _slurm_log(self, backend_id: str) -> Path | None:
        key = self._key_of(backend_id)
        return None if key is None else self._root / key / "slurm" / log_name(backend_id)

    def _submitted_at(self, backend_id: str) -> float | None:
        with contextlib.suppress(OSError):
            return (self._root / ".ids" / backend_id.split("_", 1)[0]).stat().st_mtime
        return None

    def _quietly(self, cmd: list[str]) -> None:
        try:
            q.run(cmd, retries=1)
        except BackendError as exc:
            logger.warning("%s", exc)

    # -- the shared state cache -----------------------------------------------------------
    @contextlib.contextmanager
    def _shared_cache(self) -> Iterator[dict[str, Any]]:
        """The cache file, read and written under its lock (held while Slurm is asked)."""
        path = self._root / CACHE_FILE
        lock = filelock.FileLock(str(path) + ".lock", timeout=30)
        try:
            lock.acquire()
        except (filelock.Timeout, OSError) as exc:
            logger.warning("state cache %s unusable (%s): asking Slurm directly", path, exc)
            yield {}
            return
        try:
            try:
                cache = json.loads(path.read_text())
            except (OSError, ValueError):
                cache = None
            if not isinstance(cache, dict) or cache.get("version") != _CACHE_VERSION:
                cache = {"version": _CACHE_VERSION, "jobs": {}}  # missing, damaged or from another jobsub
            before = json.dumps(cache, sort_keys=True)
            yield cache
            if json.dumps(cache, sort_keys=True) != before:
                LocalStorage(path.parent).write_bytes(path.name, json.dumps(cache).encode())
        finally:
            lock.release()

    # -- cancel and logs ------------------------------------------------------------------
    def cancel(self, backend_ids: Sequence[str]) -> None:
        """scancel the jobs (an array id cancels every task) and drop them from the shared cache."""
        ids = list(backend_ids)
        if not ids:
            return
        q.run(["scancel", *ids], accept=lambda p: "already complet" in p.stderr or "Invalid job id" in p.stderr)
        self._cancelled.update(ids)
        with self._shared_cache() as cache:  # the next poll must ask Slurm, not the cache
            gone = set(ids)
            for backend_id in list(cache["jobs"]) if cache else []:
                if backend_id in gone or backend_id.split("_", 1)[0] in gone:
                    del cache["jobs"][backend_id]

    def logs(self, backend_id: str, folder: JobFolder, index: int, rank: int) -> tuple[str | None, str | None]:
        """The worker's logs; stderr ends with Slurm's own output (time limit, OOM, startup errors)."""
        out, err = super().logs(backend_id, folder, index, rank)
        if rank != 0 or folder.path is None:
            return out, err
        log = folder.path / "slurm" / log_name(backend_id)
        try:
            own = log.read_text(errors="replace")
        except OSError:
            return out, err
        if not own.strip():
            return out, err
        prefix = err if not err or err.endswith("\n") else err + "\n"
        return out, f"{prefix or ''}----- Slurm's output ({log}) -----\n{own}"


def _status(row: q.Row) -> Status:
    return Status(row.state, f"{row.native}: {row.reason}" if row.reason else row.native)


def _cache_get(cache: dict[str, Any], ids: list[str], *, newer_than: float) -> dict[str, Status] | None:
    """Every id's status if each is final or was answered after ``newer_than``."""
    jobs = cache.get("jobs", {})
    answer = {}
    for backend_id in ids:
        entry = jobs.get(backend_id)
        if entry is None:
            return None
        state = JobState(entry[0])
        if not state.is_final and entry[2] <= newer_than:
            return None
        answer[backend_id] = Status(state, entry[1])
    return answer


def _cache_wanted(cache: dict[str, Any], now: float, within: float) -> list[str]:
    """Unfinished ids some process asked about recently."""
    return [
        i for i, (state, _r, _at, wanted) in cache.get("jobs", {}).items()
        if wanted >= now - within and not JobState(state).is_final
    ]


def _cache_put(cache: dict[str, Any], answer: dict[str, Status], now: float, ids: list[str]) -> None:
    """Record ``answer`` (``ids`` are the ones this process wants); forget entries idle for 10 min."""
    if "jobs" not in cache:
        return  # the lock could not be taken: nothing to share
    jobs = cache["jobs"]
    wanted = set(ids)
    for backend_id, status in answer.items():
        old = jobs.get(backend_id)
        seen = now if backend_id in wanted else (old[3] if old else 0.0)
        jobs[backend_id] = [status.state.value, status.reason, now, seen]
    for backend_id in [i for i, e in jobs.items() if max(e[2], e[3]) < now - 600]:
        del jobs[backend_id]


def _read_tail(path: Path, size: int = 8192) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""
