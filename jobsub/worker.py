"""``python -m jobsub.worker FOLDER``: the one program every backend runs.

::

    backend starts N copies ──> worker: index, rank from the environment
                                  │  exit/<i>.json says CANCELLED? then stop here (exit 0)
                                  │  reads call.pkl + args/<i>.pkl (or checkpoint/<i>.pkl)
                                  │  runs function(*args, **kwargs)
                                  │  exit/<i>.json says CANCELLED now? then publish nothing (exit 0)
                                  └─> writes result/<i>.<r>.pkl atomically (Outcome + usage)

A backend tells the worker where its index and rank are with ``--env
name=VARIABLE`` (e.g. ``--env index=SLURM_ARRAY_TASK_ID``) and, when an array
was split to fit a scheduler's limit, with ``--offset``.  The worker then
exports the canonical ``JOBSUB_*`` variables that ``JobEnvironment`` reads,
so nothing in user code depends on the backend.

Exit codes: 0 the function returned, 1 it raised (the result file says
how), 74 the job folder could not be written (a full disk), 75 a checkpoint
was written and the backend should run the task again, 76 a job passed as an
argument failed, so this one did not run.

A cancel through jobsub is recorded in the folder before the scheduler is
asked (``Job.cancel``): a scheduler that ends whole arrays only (GCP Batch,
Kubernetes) still starts a task of an array cancelled alone, or lets it run
on, and the worker is where such a task stops.

Jobs passed as arguments arrive as ``JobRef`` objects: the worker reads their
results from their folders through the storage, never by asking a scheduler
(a task on a cloud backend has no scheduler credentials).  Backends that
supervise their tasks (local, Docker) and Slurm (``afterok``) start a task
only once its upstream jobs have ended, so the read finds them; across
backends the worker waits for the upstream's result or exit record, at most
``JOBSUB_DEPENDENCY_WAIT_S`` seconds (default one hour).
"""

from __future__ import annotations

import os
import pickle
import resource
import signal
import sys
import time
import types

from . import trust
from .calls import DelayedSubmission, JobRef, Outcome, dumps_checked
from .errors import BackendError, CorruptResultError, DependencyError, JobTimeoutError
from .folder import JobFolder

TYPE_CHECKING = False  # as typing.TYPE_CHECKING: typing and pathlib stay out of every task's start
if TYPE_CHECKING:
    import logging
    from collections.abc import Sequence
    from typing import Any

__all__ = ["REQUEUE_EXIT_CODE", "load_task", "main", "run_task"]

_LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"
_owns_logging = False
"""True in a worker process (``main``): it may configure the root logger; never in a user's process."""

IO_ERROR_EXIT_CODE = 74
"""Exit code meaning "the job folder could not be written" (a full disk, a deleted folder), or, on
an object store, "could not be reached" (no route to the store's endpoint, no credentials)."""
REQUEUE_EXIT_CODE = 75
"""Exit code meaning "checkpointed, run me again" for backends that requeue themselves; they
also find ``requeue/<i>`` in the folder, so a task that merely exits 75 is not run again."""
DEPENDENCY_FAILED_EXIT_CODE = 76
"""Exit code meaning "a job passed as an argument failed, so this one did not run": CANCELLED,
as Slurm reports a job whose ``afterok`` dependency failed."""


def warning_delay_s(signal_delay_s: float, timeout_s: float) -> float:
    """Seconds before the time limit when the checkpoint signal comes: at most half-way through.

    The one rule of every backend (a delay longer than the limit would signal
    a task the moment it starts); the worker uses it to tell the timeout
    warning from a preemption.
    """
    return min(signal_delay_s, timeout_s / 2)

# canonical name -> JOBSUB_* variable read by JobEnvironment
CANONICAL = {
    "index": "JOBSUB_ARRAY_TASK_ID",
    "rank": "JOBSUB_GLOBAL_RANK",
    "local_rank": "JOBSUB_LOCAL_RANK",
    "node": "JOBSUB_NODE",
    "num_tasks": "JOBSUB_NUM_TASKS",
    "num_nodes": "JOBSUB_NUM_NODES",
    "job_id": "JOBSUB_RAW_JOB_ID",
    "array_job_id": "JOBSUB_ARRAY_JOB_ID",
    "attempt": "JOBSUB_ATTEMPT",
}


def _getenv_int(names: str | None, default: int) -> int:
    """The first of ``names`` (``A|B``: alternatives, in order) whose value ends in an integer.

    A value ``<text>:<n>`` counts as ``n``: AWS Batch names an array child
    ``<parent id>:<index>`` in ``AWS_BATCH_JOB_ID``, which is where the index is
    when ``AWS_BATCH_JOB_ARRAY_INDEX`` is missing.
    """
    for name in (names or "").split("|"):
        value = os.environ.get(name, "").rpartition(":")[2].strip() if name else ""
        if value.lstrip("-").isdigit():
            return int(value)
    return default


def export_environment(folder: JobFolder, backend: str, env_map: dict[str, str], offset: int) -> tuple[int, int]:
    """Read the backend's variables, export the JOBSUB_* ones; return (index, rank)."""
    mapping = {name: env_map.get(name, var) for name, var in CANONICAL.items()}
    raw_index = _getenv_int(mapping["index"], 0)
    values = {
        "index": str(raw_index + offset),
        "rank": str(_getenv_int(mapping["rank"], 0)),
        "local_rank": str(_getenv_int(mapping["local_rank"], 0)),
        "node": str(_getenv_int(mapping["node"], 0)),
        "num_tasks": str(_getenv_int(mapping["num_tasks"], 1)),
        "num_nodes": str(_getenv_int(mapping["num_nodes"], 1)),
    }
    array_job_id = os.environ.get(mapping["array_job_id"], "")
    parent, colon, child = array_job_id.rpartition(":")
    if colon and child.isdigit():  # AWS Batch's child "<array id>:<index>"; other ids may hold a ':'
        array_job_id = parent  # (GCP Batch's of a domain-scoped project: "example.com:proj.<region>.<job>")
    raw_job_id = os.environ.get(mapping["job_id"], "")
    job_id = f"{array_job_id}_{raw_index}" if array_job_id else raw_job_id
    attempt = _getenv_int(mapping["attempt"], 0)
    if attempt:  # which run of the task this is, for backends that retry (usage["attempt"])
        values["attempt"] = str(attempt)
    for name, value in values.items():
        os.environ[CANONICAL[name]] = value
    os.environ.update(
        JOBSUB_FOLDER=folder.url,
        JOBSUB_BACKEND=backend,
        JOBSUB_JOB_ID=job_id,
        JOBSUB_RAW_JOB_ID=raw_job_id,
        JOBSUB_ARRAY_JOB_ID=array_job_id,
    )
    return int(values["index"]), int(values["rank"])


def load_task(folder: JobFolder, index: int) -> tuple[DelayedSubmission, dict[str, Any]]:
    """The call task ``index`` must make (its checkpoint if one exists) and the submission spec."""
    spec: dict[str, Any] = pickle.loads(folder.read_call())
    checkpoint = folder.read_checkpoint(index)
    if checkpoint is not None:
        return pickle.loads(checkpoint), spec
    task = pickle.loads(folder.read_args(index, spec.get("shard", 1)))
    if isinstance(task, DelayedSubmission):
        delayed = task
    else:
        args, kwargs = task
        delayed = DelayedSubmission(spec["function"], *args, **kwargs)
    delayed.set_timeout(spec.get("timeout_min") or 0, spec.get("max_num_timeout", 0))
    return delayed, spec


_SIGNAL_SLACK_S = 60.0
"""Slurm may send the warning up to a minute early (its event resolution)."""


def _usage(start: float, rank: int) -> dict[str, Any]:
    return {
        "host": os.uname().nodename,
        "pid": os.getpid(),
        "rank": rank,
        "start": start,
        "end": time.time(),
        "elapsed_s": round(time.time() - start, 6),
        # ru_maxrss is in KiB on Linux
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "python": sys.version.split()[0],
        **({"attempt": int(os.environ["JOBSUB_ATTEMPT"])} if os.environ.get("JOBSUB_ATTEMPT") else {}),
    }


class _Requeue(BaseException):
    """Raised from the signal handler to leave the function and ask for a requeue."""


class _CheckpointHandler:
    """On the pre-timeout/preemption signal: checkpoint and ask to be run again."""

    def __init__(
        self, folder: JobFolder, index: int, delayed: DelayedSubmission, start: float, delay_s: float
    ) -> None:
        self.folder, self.index, self.delayed, self.start, self.delay_s = folder, index, delayed, start, delay_s

    def timed_out(self) -> bool:
        """A signal near the time the warning is due is the timeout warning; an earlier one, a preemption."""
        limit_s = self.delayed._timeout_min * 60
        due = limit_s - warning_delay_s(self.delay_s, limit_s)
        return limit_s > 0 and time.time() - self.start >= due - _SIGNAL_SLACK_S

    def __call__(self, signum: int, frame: types.FrameType | None) -> None:
        timed_out = self.timed_out()
        _logger().warning("received %s (%s)", signal.Signals(signum).name, "timeout" if timed_out else "preemption")
        countdown = self.delayed._timeout_countdown - int(timed_out)
        checkpoint = self.delayed._checkpoint_function()
        if checkpoint is None:
            if signum == signal.SIGTERM:  # the preemption signal is the stop signal (AWS): stop now
                _logger().warning("not checkpointable: stopping")
                _leave(128 + signum)  # (as PID 1 of a container, the default action would be none)
            # not checkpointable: keep computing until the scheduler's own limit, which
            # then reports TIMEOUT (or PREEMPTED) itself
            _logger().warning("not checkpointable: ignoring the signal")
            return
        if countdown < 0:
            from .states import JobState

            _say("Job not requeued because: timed-out too many times.")
            raise JobTimeoutError(
                "the job timed-out too many times (max_num_timeout reached)", state=JobState.TIMEOUT
            )
        checkpoint.set_timeout(self.delayed._timeout_min, countdown)
        self.folder.write_checkpoint(self.index, dumps_checked(checkpoint, "the checkpoint"))
        _logger().warning("checkpoint written for task %d; requeueing", self.index)
        _say(f"Requeued job {os.environ.get('JOBSUB_JOB_ID', '')} ({countdown} remaining timeouts)")
        raise _Requeue()


def _say(line: str) -> None:
    """A line on the task's stdout, in submitit's words: its users grep their jobs' output for them.

    Written to the descriptor, not through ``sys.stdout``: this runs in a signal handler, which may
    have interrupted the task in the middle of its own ``print`` (a reentrant buffered write raises).
    """
    with _QuietStreamErrors():
        os.write(1, (line + "\n").encode())


def _redirect_logs(folder: JobFolder, index: int, rank: int, merge: bool = False) -> None:
    """stdout and stderr (fds 1 and 2, so subprocesses' output too) into the folder's log files.

    On an object store they go to local files first, uploaded every
    ``JOBSUB_LOG_FLUSH_S`` seconds (30) while the task runs and once more
    before its result is written: ``job.stdout()`` works during and after.
    """
    global _uploader
    if folder.local_file() is None:
        _uploader = _LogUploader(folder, index, rank, merge)
        return
    for stream, fd in (("out", 1), ("err", 2)):
        log = folder.local_file("log", f"{index}.{rank}.{'out' if merge else stream}")
        assert log is not None
        target = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)  # the umask decides who reads
        os.dup2(target, fd)
        os.close(target)


class _LogUploader:
    """The task's streams in local files, copied to an object-store folder now and then."""

    def __init__(self, folder: JobFolder, index: int, rank: int, merge: bool) -> None:
        import tempfile
        import threading

        self.folder, self.index, self.rank = folder, index, rank
        self.dir = tempfile.mkdtemp(prefix="jobsub-logs-")
        self.files = {"out": os.path.join(self.dir, "out")}
        if not merge:
            self.files["err"] = os.path.join(self.dir, "err")
        self.console = os.dup(2)  # the process's own stderr: the backend's log of the task
        for stream, fd in (("out", 1), ("err", 2)):
            target = os.open(self.files.get(stream, self.files["out"]), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(target, fd)
            os.close(target)
        self.sent: dict[str, int] = {}
        self.lock = threading.Lock()
        self.every = float(os.environ.get("JOBSUB_LOG_FLUSH_S") or 30)
        threading.Thread(target=self._loop, name="jobsub-log-upload", daemon=True).start()

    def _loop(self) -> None:
        while True:
            time.sleep(self.every)
            self.upload()

    def close(self, reachable: bool = True) -> None:
        """The last upload, then the local copies go.

        A folder that cannot be reached gets no upload (another round of
        retries for nothing): what the task wrote goes to the process's own
        stderr instead, which the backend keeps (a container's output).
        """
        import shutil

        if reachable:
            self.upload()
        else:
            for path in dict.fromkeys(self.files.values()):
                try:
                    with open(path, "rb") as f:
                        os.write(self.console, f.read())
                except OSError:
                    pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def upload(self) -> None:
        """Send what the streams hold now (whole files: an object cannot be appended to)."""
        with _QuietStreamErrors():
            sys.stdout.flush()
            sys.stderr.flush()
        with self.lock:
            for stream, path in self.files.items():
                try:
                    with open(path, "rb") as f:
                        data = f.read()
                    if len(data) != self.sent.get(stream):
                        self.folder.write_task_log(self.index, self.rank, stream, data)
                        self.sent[stream] = len(data)
                except Exception as exc:  # a log that cannot be sent must not end the task
                    os.write(2, f"jobsub: could not upload the {stream} log: {exc}\n".encode())


_uploader: _LogUploader | None = None


def run_task(folder: JobFolder, index: int, rank: int, *, report_failure: bool = True) -> int:
    """Run task ``index`` (rank ``rank``) and write its outcome; return the exit code.

    ``report_failure``: also log a failure's traceback (to the task's stderr); off where the
    caller raises it itself (the debug backend), so it is not shown twice.
    """
    start = time.time()
    reason = _cancelled(folder, index)
    if reason is not None:
        _logger().warning("task %d was cancelled before it started (%s): not running it", index, reason)
        return 0
    try:
        delayed, spec = load_task(folder, index)
    except BackendError as exc:
        if folder.local_file() is not None:
            return _write_outcome(folder, index, rank, Outcome.from_exception(exc, _usage(start, rank)), 1)
        # the store cannot be reached from here (its retries are spent): a result could not be written either
        _stderr(f"jobsub: task {index} rank {rank} cannot reach its job folder {folder.url}: {exc}\n")
        return IO_ERROR_EXIT_CODE
    except Exception as exc:  # the inputs themselves are broken: report it as the job's error
        return _write_outcome(folder, index, rank, Outcome.from_exception(exc, _usage(start, rank)), 1)
    where = spec.get("submitit_logs")
    if where is not None and _owns_logging:  # submitit's log names, for tools that read them by hand
        folder.link_submitit_log(where or (folder.local_file() or ""), os.environ.get("JOBSUB_JOB_ID", ""), index, rank)
    # rank 0 checkpoints; the other ranks must merely survive the signal
    usr_sig = getattr(signal, "SIG" + os.environ.get("JOBSUB_PREEMPT_SIGNAL", "USR2"))
    delay_s = float(spec.get("signal_delay_s", 90))
    handler = _CheckpointHandler(folder, index, delayed, start, delay_s) if rank == 0 else signal.SIG_IGN
    try:  # signals can only be handled in the main thread (the debug backend may run tasks elsewhere)
        previous = signal.signal(usr_sig, handler)
        in_main = True
    except ValueError:
        previous, in_main = None, False
    if _owns_logging and "logging" in sys.modules:
        _configure_logging(delayed.function)  # the task's code uses logging: show its INFO records
    try:
        _resolve_dependencies(delayed)
        value = delayed.result()
    except _Requeue:
        return _requeue(folder, index)
    except _DependencyFailed as failed:
        outcome = Outcome.from_exception(failed.error, _usage(start, rank))
        return _write_outcome(folder, index, rank, outcome, DEPENDENCY_FAILED_EXIT_CODE)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt end the job too: record them
        outcome = Outcome.from_exception(exc, _usage(start, rank))
        # in the job's stderr too, as submitit does, and before the result (a client that sees the
        # result may read the log at once); quietly: a task that closed its stderr must not lose
        # its real error to a failed log write
        if report_failure:
            with _QuietStreamErrors():
                _logger().error("the job failed:\n%s", outcome.traceback.rstrip())
        return _write_outcome(folder, index, rank, outcome, 1)
    finally:
        if in_main:
            signal.signal(usr_sig, previous)
    return _write_outcome(folder, index, rank, Outcome(ok=True, value=value, usage=_usage(start, rank)), 0)


def _write_outcome(folder: JobFolder, index: int, rank: int, outcome: Outcome, code: int) -> int:
    """Write the outcome once; ``code`` if it is written, 74 if the folder refused it.

    A result already there means a twin of this task (a retried attempt on an
    at-least-once scheduler) wrote first: its result stands, and this one
    leaves quietly rather than replace what a client may have read.
    """
    reason = _cancelled(folder, index)
    if reason is not None:  # the result would make a cancelled task COMPLETED (or FAILED)
        _logger().warning("task %d was cancelled while it ran (%s): its result is not published", index, reason)
        return 0
    if _uploader is not None:  # the logs first: a client that sees the result may read them at once
        _uploader.upload()
    try:
        folder.write_result(index, rank, outcome.dumps(), ok=outcome.ok)
    except FileExistsError:
        _stderr(f"jobsub: task {index} rank {rank} already has a result (written by an earlier attempt); keeping it\n")
        return 0
    except (OSError, BackendError) as exc:
        _stderr(f"jobsub: cannot write the result of task {index} rank {rank} to {folder.url}: {exc}\n")
        return IO_ERROR_EXIT_CODE
    return code


def _cancelled(folder: JobFolder, index: int) -> str | None:
    """Why task ``index`` was cancelled, if the folder records it (``Job.cancel`` writes it first).

    A scheduler that ends whole arrays only (GCP Batch, Kubernetes) still starts a task of an
    array cancelled alone, or lets it run on: this is where such a task stops.  A record that
    cannot be read is no cancel (the folder's own error comes with the next step).  Exit 0: a
    scheduler counts no failure (no retry, no spent backoff), and the record says CANCELLED.
    """
    try:
        return folder.cancel_reason(index)
    except Exception:  # the store's error is the next step's to report
        return None


def _stderr(text: str) -> None:
    with _QuietStreamErrors():
        sys.stderr.write(text)
        sys.stderr.flush()


class _QuietStreamErrors:
    """Writing to a stream the task closed (or to a full disk) must not replace the task's own error."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], (OSError, ValueError))  # type: ignore[arg-type]


class _DependencyFailed(Exception):
    def __init__(self, error: DependencyError) -> None:
        super().__init__(str(error))
        self.error = error


def _resolve_dependencies(delayed: DelayedSubmission) -> None:
    """Jobs passed as arguments (``JobRef``, also inside lists, tuples and dicts) stand for their results.

    One that failed (in any way) means this job does not run: it ends
    CANCELLED, saying which dependency failed and how, as on Slurm.
    """
    if not JobRef.unpickled:  # no JobRef was unpickled, so none is an argument
        return
    delayed.args = tuple(_resolve(a) for a in delayed.args)
    delayed.kwargs = {k: _resolve(v) for k, v in delayed.kwargs.items()}


def _resolve(obj: Any) -> Any:
    if isinstance(obj, JobRef):
        return _dependency_value(obj)
    if type(obj) in (list, tuple):
        return type(obj)(_resolve(x) for x in obj)
    if type(obj) is dict:
        return {k: _resolve(v) for k, v in obj.items()}
    return obj


def _dependency_value(ref: JobRef) -> Any:
    """The upstream's value; wait (bounded) while it has neither a result nor an exit record."""
    folder = JobFolder.from_url(ref.folder)
    wait_s = float(os.environ.get("JOBSUB_DEPENDENCY_WAIT_S") or 3600)
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            payloads = [folder.read_result(ref.index, rank) for rank in ref.ranks]
        except CorruptResultError as exc:
            raise _dependency_failed(ref, f"its result is damaged ({exc})") from None
        if all(p is not None for p in payloads):
            try:
                outcomes = [Outcome.loads(p, folder.result_url(ref.index, r)) for r, p in zip(ref.ranks, payloads) if p is not None]
            except CorruptResultError as exc:
                raise _dependency_failed(ref, f"its result is damaged ({exc})") from None
            bad = next((o for o in outcomes if not o.ok), None)
            if bad is not None:
                first = bad.message.strip().splitlines()[0] if bad.message.strip() else ""
                raise _dependency_failed(ref, f"raised {bad.exc_type.rpartition('.')[2]}", first)
            values = [o.value for o in outcomes]
            return values[0] if len(values) == 1 else values
        end = folder.read_exit(ref.index)
        if end is not None:
            reason = f" ({end.get('reason')})" if end.get("reason") else ""
            raise _dependency_failed(ref, f"ended in state {end.get('state')}{reason} without a result")
        if not folder.exists():
            raise _dependency_failed(ref, f"has no job folder any more ({folder.url} was deleted)")
        if time.monotonic() > deadline:
            raise _dependency_failed(ref, f"had no result after {wait_s:g} s (JOBSUB_DEPENDENCY_WAIT_S)")
        time.sleep(delay)
        delay = min(2.0, delay * 1.5)


def _dependency_failed(ref: JobRef, what: str, detail: str = "") -> _DependencyFailed:
    from .states import JobState

    reason = f"a dependency failed: job {ref.job_id} {what}"
    message = f"{reason}: {detail}" if detail else reason
    error = DependencyError(message, state=JobState.CANCELLED, reason=reason, upstream=ref.job_id)
    return _DependencyFailed(error)


_task_handler: logging.Handler | None = None


def _configure_logging(function: object = None) -> None:
    """The INFO records of the task's own package (and jobsub's) to stderr, with time and logger name.

    The root logger is left alone: a library's INFO chatter stays quiet (its
    warnings still show, as Python shows them), and a task that configures
    logging itself is in charge: the handler here stays silent for any record
    another handler will show, so nothing is shown twice.  Done only once the
    call is unpickled (its modules imported) and only if something imported
    ``logging`` by then: the import costs every task start ~10 ms, which a
    task that never logs should not pay.
    """
    import logging

    global _task_handler
    if _task_handler is None:
        _task_handler = _new_task_log_handler()
        _task_handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    module = getattr(function, "__module__", None) or ""
    for name in {"jobsub", module.partition(".")[0]} - {""}:
        logger = logging.getLogger(name)
        if _task_handler not in logger.handlers:
            logger.addHandler(_task_handler)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)


def _new_task_log_handler() -> logging.Handler:
    """The handler of ``_configure_logging`` (its class is made here: logging is imported late)."""
    import logging

    class TaskLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
        def emit(self, record: logging.LogRecord) -> None:
            logger: logging.Logger | None = logging.getLogger(record.name)
            while logger is not None:  # the task's own handlers (root's included) win
                if any(h is not self for h in logger.handlers):
                    return
                logger = logger.parent if logger.propagate else None
            super().emit(record)

    return TaskLogHandler()


def _logger() -> logging.Logger:
    """The worker's logger, for its rare messages (signals, checkpoints)."""
    import logging

    if _owns_logging:
        _configure_logging()
    return logging.getLogger("jobsub.worker")


def _requeue(folder: JobFolder, index: int) -> int:
    folder.mark_requeue(index)  # the exit code alone could be anyone's: this says it is ours
    command = os.environ.get("JOBSUB_REQUEUE_COMMAND")
    if command:
        import subprocess

        # e.g. Slurm: "scontrol requeue 1234"; the scheduler then stops this run
        subprocess.run(command, shell=True, check=False)
    return REQUEUE_EXIT_CODE


USAGE = """usage: python -m jobsub.worker FOLDER [--backend NAME] [--logs | --merge-logs] [--offset N] [--env NAME=VARIABLE]...

  FOLDER                the job folder (path or URL)
  --backend NAME        the backend that started this task (for JobEnvironment)
  --logs                write stdout/stderr into the folder's log/<index>.<rank>.out|err
  --merge-logs          with --logs: stderr into the .out file too (stderr_to_stdout)
  --offset N            added to the array index (arrays split at a scheduler's limit)
  --env NAME=VARIABLE   where the backend keeps index, rank, ... (see CANONICAL)
"""


def _parse(argv: Sequence[str]) -> tuple[str, str, str, int, dict[str, str]]:
    """A tiny parser: argparse would cost every task several milliseconds of imports."""
    folder, backend, logs, offset, env_map = "", "local", "", 0, {}
    items = iter(argv)
    for arg in items:
        if arg in ("--logs", "--merge-logs"):
            logs = "merge" if arg == "--merge-logs" or logs == "merge" else "separate"
        elif arg in ("--backend", "--offset", "--env"):
            value = next(items, None)
            if value is None:
                raise SystemExit(f"{arg} needs a value\n{USAGE}")
            if arg == "--backend":
                backend = value
            elif arg == "--offset":
                offset = int(value)
            else:
                name, _, variable = value.partition("=")
                env_map[name] = variable
        elif arg in ("-h", "--help"):
            sys.stdout.write(USAGE)
            raise SystemExit(0)
        elif not folder and not arg.startswith("-"):
            folder = arg
        else:
            raise SystemExit(f"unexpected argument {arg!r}\n{USAGE}")
    if not folder:
        raise SystemExit(USAGE)
    return folder, backend, logs, offset, env_map


def main(argv: Sequence[str] | None = None) -> int:
    url, backend, logs, offset, env_map = _parse(sys.argv[1:] if argv is None else argv)
    trust.take_secrets()  # before the user's code: it and its subprocesses never see them
    folder = JobFolder.from_url(url)
    index, rank = export_environment(folder, backend, env_map, offset)
    if logs:
        _redirect_logs(folder, index, rank, merge=logs == "merge")
    global _owns_logging
    _owns_logging = True
    code = run_task(folder, index, rank)
    if _uploader is not None:  # what came after the result (the failure's traceback)
        _uploader.close(reachable=code != IO_ERROR_EXIT_CODE)
    return code


def _leave(code: int) -> None:
    """End the process now, whatever threads the task left running.

    The task's outcome is written: a non-daemon thread it started must not
    keep the job (a container, a Slurm allocation, a slot of the array)
    alive after it, nor make ``cancel()`` of a finished job look possible.
    """
    for stream in (sys.stdout, sys.stderr):
        with _QuietStreamErrors():
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    _leave(main())
