"""The Slurm backend's parameters and the sbatch script built from them (pure code, no I/O).

::

    Resolved(common, SlurmParameters, dependencies) ──> sbatch_script() ──> <folder>/slurm/<offset>.sh
        #SBATCH --output=<folder>/slurm/%A_%a.out --open-mode=append   Slurm's own log, one per task
        #SBATCH --signal=[B:]USR2@<signal_delay_s>                      the checkpoint warning
        export JOBSUB_REQUEUE_COMMAND=...                               what the worker runs to come back
        <setup lines>
        exec python -m jobsub.worker ...      (one rank: the batch shell *is* the worker)
        srun python -m jobsub.worker ...      (several ranks, or use_srun=True)

Slurm sends ``--signal=USR2@N`` only to the tasks of srun steps and
``--signal=B:USR2@N`` only to the batch shell; the script picks the form
that reaches the worker (``exec`` makes the worker the batch shell; with
teardown lines the shell stays and forwards the signal).
"""

from __future__ import annotations

import logging
import math
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from ...errors import InvalidParameterError
from ...parameters import Parse, Resolved
from ...units import check_slurm_memory
from ...worker import warning_delay_s
from ..base import Launch

logger = logging.getLogger("jobsub.slurm")

__all__ = ["SIGNAL", "SlurmParameters", "log_name", "sbatch_script"]

SIGNAL = "USR2"
"""The worker's checkpoint signal (jobsub.worker's default JOBSUB_PREEMPT_SIGNAL)."""

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(kw_only=True)
class SlurmParameters:
    """sbatch options of the Slurm backend (``slurm_<key>`` with AutoExecutor); None means "not set".

    Keys that mean the same as a common key (``time``, ``job_name``,
    ``ntasks_per_node``, ``nodes``, ``cpus_per_task``, ``gpus_per_node``,
    ``num_gpus``, ``setup``, ``signal_delay_s``, ``array_parallelism``,
    ``stderr_to_stdout``, ``max_num_timeout``) are spellings of the common
    key (``SlurmBackend.aliases``), not fields here, so there is one value.
    """

    partition: str | None = None
    qos: str | None = None
    account: str | None = None
    mem: Annotated[str | int | None, Parse(check_slurm_memory)] = None
    """Native ``--mem`` as Slurm writes it (``"4G"``, ``"500M"``, or MB as an int); overrides ``mem_gb``."""
    mem_per_cpu: Annotated[str | int | None, Parse(check_slurm_memory)] = None
    mem_per_gpu: Annotated[str | int | None, Parse(check_slurm_memory)] = None
    cpus_per_gpu: int | None = None
    gpus_per_task: int | None = None
    gres: str | None = None
    constraint: str | None = None
    exclude: str | None = None
    nodelist: str | None = None
    exclusive: bool | str | None = None
    comment: str | None = None
    wckey: str | None = None
    mail_type: str | None = None
    mail_user: str | None = None
    dependency: str | None = None
    """Extra ``--dependency`` terms, added to the ``afterok`` of jobs passed as arguments."""
    teardown: list[str] | None = None
    """Shell lines run after the worker (the job's exit code stays the worker's)."""
    additional_parameters: dict[str, Any] | None = None
    """Any sbatch option, ``{"begin": "now+1hour"}``; wins over every other key."""
    srun_args: list[str] | None = None
    use_srun: bool | None = None
    """None: srun only for multi-task jobs; True: always; False: never (one task only)."""
    python: str | None = None
    """Shell text that starts Python on the nodes (e.g. ``"singularity exec img.sif python"``)."""


def _mem(mem_gb: float) -> str:
    # Slurm reads plain numbers as MB; whole GB stay readable in the script
    return f"{int(mem_gb)}G" if mem_gb == int(mem_gb) else f"{math.ceil(mem_gb * 1024)}M"


def _signal_delay_s(delay_s: int, timeout_min: float | None) -> int:
    """Whole seconds before Slurm's (whole-minute) limit: the one rule of every backend."""
    if timeout_min is None:
        return delay_s
    return max(1, int(warning_delay_s(delay_s, math.ceil(timeout_min) * 60)))


def _percent_escaped(path: Path) -> str:
    """Slurm expands %j, %A... in --output; a literal % in the folder path must be doubled."""
    return str(path).replace("%", "%%")


def log_name(backend_id: str) -> str:
    """Name of Slurm's own output file of a job or array task, inside ``<folder>/slurm/``."""
    return f"{backend_id}.out"


def _options(
    params: Resolved, folder_path: Path, n_tasks: int, array: bool, srun: bool
) -> dict[str, Any]:
    common, slurm = params.common, params.specific
    pattern = "%A_%a" if array else "%j"
    opts: dict[str, Any] = {
        "job-name": common.name,
        "output": f"{_percent_escaped(folder_path)}/slurm/{log_name(pattern)}",
        # a requeued run must not truncate the log of the first one
        "open-mode": "append",
        "signal": f"{'' if srun else 'B:'}{SIGNAL}@{_signal_delay_s(common.signal_delay_s, common.timeout_min)}",
    }
    if array:
        throttle = common.array_parallelism
        opts["array"] = f"0-{n_tasks - 1}" + (f"%{throttle}" if throttle and throttle < n_tasks else "")
    if common.timeout_min is not None:
        # whole minutes (Slurm's unit), never below one
        opts["time"] = max(1, math.ceil(common.timeout_min))
        if opts["time"] != common.timeout_min:
            logger.warning(
                "timeout_min=%g: Slurm counts whole minutes, so the limit is %d min", common.timeout_min, opts["time"]
            )
    if common.nodes > 1:
        opts["nodes"] = common.nodes
    if common.tasks_per_node > 1:
        opts["ntasks-per-node"] = common.tasks_per_node
    if common.cpus_per_task is not None:
        opts["cpus-per-task"] = common.cpus_per_task
    if common.gpus_per_node is not None:
        opts["gpus-per-node"] = common.gpus_per_node
    if slurm.mem is not None:
        opts["mem"] = slurm.mem
    elif common.mem_gb is not None and slurm.mem_per_cpu is None and slurm.mem_per_gpu is None:
        opts["mem"] = _mem(common.mem_gb)  # sbatch refuses --mem together with --mem-per-*
    for key in (
        "partition", "qos", "account", "mem_per_cpu", "mem_per_gpu", "cpus_per_gpu", "gpus_per_task",
        "gres", "constraint", "exclude", "nodelist", "comment", "wckey", "mail_type", "mail_user",
    ):
        value = getattr(slurm, key)
        if value is not None:
            opts[key.replace("_", "-")] = value
    if slurm.exclusive:
        opts["exclusive"] = slurm.exclusive
    dependency = [f"afterok:{':'.join(params.dependencies)}"] if params.dependencies else []
    if slurm.dependency:
        dependency.append(slurm.dependency)
    if dependency:
        opts["dependency"] = ",".join(dependency)  # "," = every term must hold
    for key, value in (slurm.additional_parameters or {}).items():
        name = key.replace("_", "-")
        if value is None or value is False:
            opts.pop(name, None)
        else:
            opts[name] = value
    return opts


def _flag(name: str, value: Any) -> str:
    # sbatch parses #SBATCH lines with shell quoting rules, so shlex.quote is safe there
    return f"#SBATCH --{name}" if value is True else f"#SBATCH --{name}={shlex.quote(str(value))}"


def sbatch_script(
    launch: Launch, n_tasks: int, params: Resolved, folder_path: Path, *, array: bool, python: str = sys.executable
) -> str:
    """The text of the sbatch script that runs ``n_tasks`` copies of the worker ``launch`` describes.

    ``python`` is the interpreter on the nodes (this one, by default); the
    ``python`` key (raw shell text, e.g. ``singularity exec img.sif python``)
    replaces it.

    Raises:
        InvalidParameterError: a combination sbatch would accept but that cannot work
            (several ranks without srun, an environment variable name that is not one).
    """
    common, slurm = params.common, params.specific
    ranks = common.tasks_per_node * common.nodes
    if not array and n_tasks != 1:
        raise InvalidParameterError(f"a non-array Slurm job runs one task, not {n_tasks}")
    if slurm.use_srun is False and ranks > 1:
        raise InvalidParameterError(
            f"use_srun=False starts one process, but tasks_per_node * nodes = {ranks} ranks need srun"
        )
    srun = bool(slurm.use_srun) or ranks > 1
    opts = _options(params, folder_path, n_tasks, array, srun)
    if launch.cwd:  # submitted by another process than the one that made it (a held submission)
        opts.setdefault("chdir", launch.cwd)
    own_id = "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}" if array else "${SLURM_JOB_ID}"
    lines = [
        "#!/bin/bash",
        "# Generated by jobsub: Slurm runs it again, unchanged, when the job is requeued.",
        *(_flag(name, opts[name]) for name in sorted(opts)),
        "",
        # an array task's own SLURM_JOB_ID may equal the array's id, and requeueing that
        # requeues every task of the array: name the task as <array id>_<index>
        f'export JOBSUB_REQUEUE_COMMAND="scontrol requeue {own_id}"',
        "export PYTHONUNBUFFERED=1",
    ]
    for name, value in launch.env.items():
        if not _ENV_NAME.match(name):
            raise InvalidParameterError(f"env: {name!r} is not a valid environment variable name")
        lines.append(f"export {name}={shlex.quote(value)}")
    if common.setup:
        lines += ["", "# setup", *common.setup]
    worker = f"{slurm.python or shlex.quote(python)} {shlex.join(launch.module_args())}"
    lines += ["", "# the worker"]
    if srun:
        cpus = [f"--cpus-per-task={common.cpus_per_task}"] if common.cpus_per_task else []
        srun_cmd = shlex.join(["srun", "--unbuffered", *cpus, *(slurm.srun_args or [])])
        run = f"{srun_cmd} {worker}"
    else:
        run = worker
    if not srun:
        # until the worker installs its handler, the signal must not kill it (default action):
        # an ignored signal stays ignored across exec, and Python may then take it over
        lines.append(f"trap '' {SIGNAL}")
    if not slurm.teardown:
        lines.append(f"exec {run}")
    elif srun:
        lines += [run, "rc=$?"]
    else:
        # the batch shell stays (teardown runs after the worker), so it must pass the
        # checkpoint signal on.  `wait` returns early (>128) when the trap ran: the worker is
        # then asked again for its own status (bash keeps it even when the worker ended while the
        # trap ran); a 127 there means bash had already given it (bash < 5.1), so rc stands
        lines += [
            f"{run} &",
            "worker=$!",
            "forwarded=0",
            f"trap 'forwarded=1; kill -{SIGNAL} $worker 2>/dev/null' {SIGNAL}",
            "wait $worker; rc=$?",
            "while [ $forwarded = 1 ]; do forwarded=0; wait $worker; again=$?; [ $again = 127 ] || rc=$again; done",
        ]
    if slurm.teardown:
        lines += ["", "# teardown", *slurm.teardown, "exit $rc"]
    return "\n".join(lines) + "\n"
