"""The Slurm backend: sbatch arrays, one squeue + one sacct per poll, shared by processes.

::

    submit ──> <folder>/slurm/<offset>.sh (see script.py) ──> sbatch --parsable ──> "<id>"
                 a transient failure is retried only after squeue shows that the script
                 was not submitted (its path is the job's command): never twice
    states(ids) ──> the user's shared state cache for this cluster fresh? (jobsub.statecache:
                 every process of the user shares one poll) ──> else ONE squeue for all ids,
                 and ONE sacct for those squeue no longer shows (or shows FAILED), if any
                 squeue: live states (real time)    sacct: how jobs ended (lags ~2 s;
                 may be disabled: then squeue alone, and result files decide)
    cancel ──> scancel          logs ──> the worker's logs + Slurm's own output file

Two Slurm habits are handled here so that ``result()`` never hangs:
a job whose ``afterok`` dependency failed stays PENDING forever
(DependencyNeverSatisfied): it is cancelled and reported CANCELLED; a
requeued job (checkpoint) is held for 120 s (BeginTime): the poll releases it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from typing import ClassVar

from ...cloud.arrays import ForgottenJobs, split_id
from ...errors import BackendError, SubmissionError
from ...folder import JobFolder, lookup_id
from ...parameters import Resolved
from ...polling import poll_interval
from ...runtime import digest
from ...statecache import SharedStateCache
from ...states import JobState, Status
from ...storage import open_storage
from ..base import Backend, Launch
from . import query as q
from .script import SlurmParameters, log_name, sbatch_script

__all__ = ["SlurmBackend", "SlurmParameters"]

logger = logging.getLogger("jobsub.slurm")

POLL_RETRIES = 2
"""squeue/sacct retries inside one poll; the poller itself backs off when a poll fails."""
LOST_GRACE_S = 60.0
"""A job neither squeue nor sacct knows is UNKNOWN this long after its submission, then its
folder decides (jobsub.cloud.arrays.ForgottenJobs): its result -> COMPLETED, none -> LOST."""
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
    usual_pending_reasons = frozenset(
        {"PENDING", *(f"PENDING: {why}" for why in ("Priority", "Resources", "Dependency", "JobArrayTaskLimit", "BeginTime"))}
    )
    """Waiting for its turn, for free resources, for its upstreams, for its array's throttle, for its start
    time: anything else (a drained node, a partition down, a limit of the account) is worth a warning."""
    result_parameters = ("python", "srun_args")

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self._storage = open_storage(root)
        # one cache per user and cluster: a user's processes (and executors) share one poll cadence;
        # a cluster set up anew (its configuration rewritten) may reuse job ids: a new cache
        conf = os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")
        try:
            written = str(os.stat(conf).st_mtime_ns)
        except OSError:
            written = ""
        self._cluster = digest(conf, written, os.environ.get("SLURM_CLUSTERS", ""))
        self._cache = SharedStateCache(f"slurm-{self._cluster}")
        self._sacct_disabled = False
        self._forgotten = ForgottenJobs(lambda: self._storage, "Slurm")
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
        script = folder.backend_file("slurm", f"{launch.offset}.sh")
        if path is None or script is None:
            raise SubmissionError(f"Slurm jobs need their folder on a shared file system path, not {folder.url}")
        # written 0600 like every job file (it names the folder that holds the job's pickles);
        # sbatch reads it, it need not be executable
        folder.write_backend_file("slurm", f"{launch.offset}.sh", sbatch_script(launch, n_tasks, params, path, array=array).encode())
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

    def waits_natively(self, upstream: Backend, job_id: str) -> bool:
        """``--dependency=afterok`` works for jobs of the same cluster."""
        return isinstance(upstream, SlurmBackend) and upstream._cluster == self._cluster

    def find_submitted(self, launch: Launch, folder: JobFolder) -> str | None:
        script = folder.backend_file("slurm", f"{launch.offset}.sh")
        return None if script is None else self._find_submitted(script)

    def _find_submitted(self, script: str) -> str | None:
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
            if cmd.strip() == script.strip():
                logger.warning("sbatch reported a failure but submitted %s as job %s", script, job_id.strip())
                return job_id.strip()
        return None

    # -- states -------------------------------------------------------------------------------
    def states(self, backend_ids: Sequence[str]) -> dict[str, Status]:
        """States of many jobs: from the shared cache if fresh, else ONE squeue + ONE sacct."""
        ids = list(dict.fromkeys(backend_ids))
        if not ids:
            return {}
        interval = poll_interval(self)
        with self._cache.locked() as cache:
            now = time.time()
            # an answer older than our own last query is one the poller asks to refresh (force)
            hit = self._cache.get(cache, ids, newer_than=max(self._last_query, now - interval))
            if hit is not None:
                return hit
            self._last_query = now
            # ask also for what other processes watch: their next poll is then a cache hit
            asked = list(dict.fromkeys([*ids, *self._cache.wanted(cache, now, 3 * interval)]))
            answer = self._ask(asked)
            self._cache.put(cache, answer, now, ids)
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
        why = "squeue and sacct do not know it" if sacct is not None else (
            "squeue forgets jobs MinJobAge after they end, and Slurm accounting (sacct) is disabled"
        )
        parent, index = split_id(backend_id)
        return self._forgotten.judge(
            parent, [(backend_id, index)], grace_s=LOST_GRACE_S, forgets=why, waiting=JobState.UNKNOWN, now=now,
        )[backend_id]

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
        if _OOM_IN_LOG.search(self._slurm_log(backend_id)):
            return Status(JobState.OUT_OF_MEMORY, f"{status.reason}; Slurm's log: memory limit exceeded")
        return status

    def _folder_of(self, backend_id: str) -> JobFolder | None:
        key = lookup_id(self._storage, backend_id.split("_", 1)[0])
        return None if key is None else JobFolder(self._storage, key)

    def _slurm_log(self, backend_id: str) -> str:
        folder = self._folder_of(backend_id)
        text = None if folder is None else folder.read_backend_file("slurm", log_name(backend_id))
        return _tail(text or b"")

    def _quietly(self, cmd: list[str]) -> None:
        try:
            q.run(cmd, retries=1)
        except BackendError as exc:
            logger.warning("%s", exc)

    # -- cancel and logs ------------------------------------------------------------------
    def cancel(self, backend_ids: Sequence[str]) -> None:
        """scancel the jobs (an array id cancels every task) and drop them from the shared cache."""
        ids = list(backend_ids)
        if not ids:
            return
        q.run(["scancel", *ids], accept=lambda p: "already complet" in p.stderr or "Invalid job id" in p.stderr)
        self._cancelled.update(ids)
        with self._cache.locked() as cache:  # the next poll must ask Slurm, not the cache
            self._cache.drop(cache, ids)

    def logs(self, backend_id: str, folder: JobFolder, index: int, rank: int) -> tuple[str | None, str | None]:
        """The worker's logs; stderr ends with Slurm's own output (time limit, OOM, startup errors)."""
        out, err = super().logs(backend_id, folder, index, rank)
        if rank != 0:
            return out, err
        own = folder.read_backend_file("slurm", log_name(backend_id))
        if own is None or not own.strip():
            return out, err
        prefix = err if not err or err.endswith("\n") else err + "\n"
        where = folder.backend_file("slurm", log_name(backend_id)) or folder.url
        return out, f"{prefix or ''}----- Slurm's output ({where}) -----\n{own.decode(errors='replace')}"


def _status(row: q.Row) -> Status:
    return Status(row.state, f"{row.native}: {row.reason}" if row.reason else row.native)


def _tail(data: bytes, size: int = 8192) -> str:
    return data[-size:].decode(errors="replace")
