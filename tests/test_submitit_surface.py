"""submitit's module tree, private helpers and Slurm value formats, as real tools reach them.

Every submitit import path works with the word changed (``jobsub.slurm.slurm``
...), each name being jobsub's own object; Slurm keys take Slurm's own
spellings of times and sizes, checked when set; the ``submitit`` alias
package maps every module to jobsub's.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import jobsub
from jobsub import helpers
from jobsub.backends.base import load_backend_class
from jobsub.backends.slurm.nodelist import NodeListError, expand_node_list
from jobsub.backends.slurm.script import SlurmParameters
from jobsub.cli import main as cli
from jobsub.parameters import CommonParameters, check_value, field_types
from jobsub.submitit_alias import (
    MARKER,
    MODULES,
    AliasError,
    alias_files,
    install_alias,
    uninstall_alias,
)
from jobsub.units import check_slurm_memory, minutes_from_slurm_time
from jobsub.watcher import JobWatcher, Watcher
from tests import tasks

ROOT = Path(__file__).resolve().parent.parent

# -- the module tree --------------------------------------------------------------------


@pytest.mark.parametrize("path", MODULES)
def test_every_submitit_module_path_imports_under_jobsub(path: str) -> None:
    importlib.import_module(f"jobsub.{path}")


@pytest.mark.parametrize(
    ("module", "name", "same_as"),
    [
        ("auto.auto", "AutoExecutor", jobsub.AutoExecutor),
        ("local.local", "LocalExecutor", jobsub.LocalExecutor),
        ("local.local", "LocalJob", jobsub.Job),
        ("local.local", "LocalJobEnvironment", jobsub.JobEnvironment),
        ("local.debug", "DebugExecutor", jobsub.DebugExecutor),
        ("local.debug", "DebugJob", jobsub.Job),
        ("slurm.slurm", "SlurmExecutor", jobsub.SlurmExecutor),
        ("slurm.slurm", "SlurmJob", jobsub.Job),
        ("slurm.slurm", "SlurmJobEnvironment", jobsub.JobEnvironment),
        ("slurm.slurm", "_parse_node_list", expand_node_list),
        ("slurm.slurm", "SlurmInfoWatcher", Watcher),
        ("core.core", "Job", jobsub.Job),
        ("core.core", "Executor", jobsub.Executor),
        ("core.core", "InfoWatcher", Watcher),
        ("core.utils", "FailedJobError", jobsub.FailedJobError),
        ("core.utils", "UncompletedJobError", jobsub.UncompletedJobError),
        ("core.job_environment", "JobEnvironment", jobsub.JobEnvironment),
        ("helpers", "as_completed", helpers.as_completed),
    ],
)
def test_mirrors_are_jobsubs_own_objects(module: str, name: str, same_as: Any) -> None:
    assert getattr(importlib.import_module(f"jobsub.{module}"), name) is same_as


def test_submodules_are_attributes_of_the_package() -> None:
    assert jobsub.slurm.slurm is importlib.import_module("jobsub.slurm.slurm")
    assert jobsub.local.debug is importlib.import_module("jobsub.local.debug")
    assert jobsub.auto.auto.AutoExecutor is jobsub.AutoExecutor


# -- classmethods tools call on the classes ---------------------------------------------


def test_executor_name_is_a_classmethod() -> None:
    assert jobsub.SlurmExecutor.name() == "slurm"
    assert jobsub.LocalExecutor.name() == "local"
    assert jobsub.DebugExecutor.name() == "debug"


def test_executor_name_on_an_instance(tmp_path: Path) -> None:
    assert jobsub.LocalExecutor(tmp_path).name() == "local"


def test_equivalence_dict_is_submitits_table() -> None:
    assert jobsub.SlurmExecutor._equivalence_dict() == {
        "name": "job_name",
        "timeout_min": "time",
        "mem_gb": "mem",
        "nodes": "nodes",
        "cpus_per_task": "cpus_per_task",
        "gpus_per_node": "gpus_per_node",
        "tasks_per_node": "ntasks_per_node",
    }


def test_equivalence_dict_names_keys_the_slurm_executor_accepts() -> None:
    backend = load_backend_class("slurm")
    accepted = {*field_types(CommonParameters), *backend.aliases, *field_types(backend.Parameters)}
    for common, native in jobsub.SlurmExecutor._equivalence_dict().items():
        assert native in accepted, native
        if native in backend.aliases:
            assert backend.aliases[native] == common


# -- Slurm's value formats --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("90", 90), ("05:30", 5.5), ("00:150", 2.5), ("1:00:00", 60), ("01:30:00", 90),
        ("2-12", 3600), ("1-00:30", 1470), ("1-0:0:30", 1440.5), (" 10 ", 10),
    ],
)
def test_slurm_time_forms(text: str, minutes: float) -> None:
    assert minutes_from_slurm_time(text) == pytest.approx(minutes)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1.5", "is not a Slurm time: use minutes, MM:SS"), ("abc", "is not a Slurm time"),
        ("1:2:3:4", "is not a Slurm time"), ("1-", "is not a Slurm time"), ("", "is not a Slurm time"),
        ("-5", "is not a Slurm time"), ("0", "Slurm reads 0 as no limit"), ("00:00:00", "Slurm reads 0"),
        ("INFINITE", "no limit is not a value"), ("unlimited", "no limit is not a value"),
    ],
)
def test_slurm_time_errors_say_what_is_valid(text: str, message: str) -> None:
    with pytest.raises(jobsub.InvalidParameterError, match=message):
        minutes_from_slurm_time(text)


def test_time_keys_take_slurm_strings_and_timeout_min_does_not() -> None:
    hint = field_types(CommonParameters)["timeout_min"]
    assert check_value("slurm_time", hint, "00:05:00") == 5.0
    assert check_value("time", hint, "1-0") == 1440.0
    assert check_value("timeout_min", hint, 7) == 7.0
    with pytest.raises(jobsub.InvalidParameterError, match="go in slurm_time"):
        check_value("timeout_min", hint, "01:00:00")
    with pytest.raises(jobsub.InvalidParameterError, match="slurm_timeout_min='1:00'"):
        check_value("slurm_timeout_min", hint, "1:00")


@pytest.mark.parametrize("value", ["4G", "4GB", "4g", "500M", "500", "512K", "1T", "2048MB", 500, 0])
def test_slurm_memory_forms(value: Any) -> None:
    for key in ("mem", "mem_per_cpu", "mem_per_gpu"):
        assert check_value(key, field_types(SlurmParameters)[key], value) == (value.strip() if isinstance(value, str) else value)


@pytest.mark.parametrize("value", ["1.5G", "4GiB", "4X", "", "-1G", "4G4", -1, True])
def test_slurm_memory_errors(value: Any) -> None:
    with pytest.raises(jobsub.InvalidParameterError, match="mem"):
        check_slurm_memory("slurm_mem", value)


def test_slurm_executor_takes_slurm_spellings(tmp_path: Path) -> None:
    from tests import slurm_env

    slurm_env.require()
    ex = jobsub.AutoExecutor(tmp_path, cluster="slurm")
    ex.update_parameters(slurm_time="01:00:00", slurm_mem="4G", slurm_mem_per_cpu="500M")
    assert ex.parameters["timeout_min"] == 60 and ex.parameters["mem"] == "4G"
    native = jobsub.SlurmExecutor(tmp_path, time="2-0", mem=2048)
    assert native.parameters["timeout_min"] == 2880 and native.parameters["mem"] == 2048
    with pytest.raises(jobsub.InvalidParameterError, match=r"slurm_mem='1\.5G' is not a Slurm memory size"):
        ex.update_parameters(slurm_mem="1.5G")


# -- _parse_node_list -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "hosts"),
    [
        ("vm", ["vm"]),
        ("a,b", ["a", "b"]),
        ("gpu[01-03,7],login", ["gpu01", "gpu02", "gpu03", "gpu7", "login"]),
        ("n[009-011]", ["n009", "n010", "n011"]),
        ("rack[1-2]-n[1-2]", ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]),
        ("x[1]y,z[2-3]", ["x1y", "z2", "z3"]),
        ("", []),
    ],
)
def test_node_lists(text: str, hosts: list[str]) -> None:
    assert expand_node_list(text) == hosts


@pytest.mark.parametrize("text", ["n[1-", "n]1[", "n[a-b]", "n[[1]]", "n[3-1]"])
def test_bad_node_lists(text: str) -> None:
    with pytest.raises(NodeListError, match="Slurm host list"):
        expand_node_list(text)


# -- FunctionSequence(verbose=True) -----------------------------------------------------


def test_function_sequence_verbose_says_where_it_starts(capsys: pytest.CaptureFixture[str]) -> None:
    sequence = helpers.FunctionSequence(verbose=True)
    sequence.add(tasks.add, 1, 2)
    sequence.add(tasks.add, 3, 4)
    sequence.delayed_functions[0].result()  # as if done before a checkpoint
    assert sequence() == [3, 7]
    assert capsys.readouterr().out == "Starting from 1/2\n"


def test_function_sequence_quiet_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    sequence = helpers.FunctionSequence()
    sequence.add(tasks.add, 1, 2)
    assert sequence() == [3]
    assert capsys.readouterr().out == ""


def test_function_sequence_verbose_line_is_in_the_jobs_stdout(local_executor: jobsub.AutoExecutor) -> None:
    sequence = helpers.FunctionSequence(verbose=True)
    for x in range(3):
        sequence.add(tasks.add, x, x)
    job = local_executor.submit(sequence)
    assert job.result() == [0, 2, 4]
    assert "Starting from 0/3" in (job.stdout() or "")


# -- the watcher, over the shared poller ------------------------------------------------


def test_watcher_answers_from_the_jobs_poller(local_executor: jobsub.AutoExecutor) -> None:
    job = local_executor.submit(tasks.add, 1, 2)
    watcher = JobWatcher().__get__(job, type(job))
    assert watcher.get_state(job.job_id, "cache") in ("PENDING", "RUNNING", "COMPLETED")
    job.result()
    calls = watcher.num_calls
    watcher.update()
    assert watcher.num_calls == calls + 1, "update() asks the backend once for every job it follows"
    assert watcher.is_done(job.job_id, "force")
    assert watcher.get_state(job.job_id) == "COMPLETED"
    assert type(watcher.get_state(job.job_id)) is str
    assert watcher.get_info(job.job_id)["State"] == "COMPLETED"


def test_class_watcher_finds_any_job_of_the_process(local_executor: jobsub.AutoExecutor) -> None:
    job = local_executor.submit(tasks.add, 1, 2)
    job.result()
    watcher = JobWatcher().__get__(None, jobsub.Job)
    deadline = time.monotonic() + 60
    while not watcher.is_done(job.job_id, "force"):  # the backend's own view, which lags the result
        assert time.monotonic() < deadline, watcher.get_state(job.job_id)
        time.sleep(0.05)
    watcher.update()
    assert watcher.get_state(job.job_id, "cache") == "COMPLETED"
    assert watcher.get_state("no-such-job") == "UNKNOWN"
    assert not watcher.is_done("no-such-job")
    with pytest.raises(ValueError, match="mode must be one of"):
        watcher.get_state(job.job_id, "sometimes")


# -- the submitit alias package ---------------------------------------------------------


def _run_with(site: Path, code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False)


def test_alias_maps_every_submitit_module_to_jobsubs(tmp_path: Path) -> None:
    install_alias(tmp_path)
    checks = "\n".join(
        f"import submitit.{path}, jobsub.{path}\n"
        f"assert submitit.{path}.__name__.startswith('jobsub.') or submitit.{path}.__file__.startswith({str(tmp_path)!r})"
        for path in MODULES
    )
    out = _run_with(tmp_path, f"""
import jobsub
{checks}
import submitit
from submitit.slurm.slurm import _parse_node_list, SlurmJob
from submitit.core.utils import FailedJobError
from submitit.local.debug import DebugExecutor
assert submitit.helpers is jobsub.helpers and submitit.core.utils is jobsub.core.utils
assert submitit.slurm.slurm is jobsub.slurm.slurm and _parse_node_list("a[1-2]") == ["a1", "a2"]
assert submitit.AutoExecutor is jobsub.AutoExecutor and SlurmJob is jobsub.Job and DebugExecutor is jobsub.DebugExecutor
assert submitit.JobEnvironment is jobsub.JobEnvironment and FailedJobError is jobsub.FailedJobError
print(submitit.__file__)
""")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tmp_path / "submitit" / "__init__.py")


def test_alias_holds_no_code_of_its_own() -> None:
    for path, text in alias_files().items():
        if path.endswith(".py"):
            assert "def " not in text.replace("def __getattr__", ""), path
            assert len(text.splitlines()) <= 10, path


def test_alias_install_replaces_an_older_alias_and_uninstall_removes_it(tmp_path: Path) -> None:
    root = install_alias(tmp_path)
    (root / "stale.py").write_text("")
    install_alias(tmp_path)
    assert not (root / "stale.py").exists() and (root / MARKER).exists()
    assert uninstall_alias(tmp_path) == root
    assert not root.exists()
    with pytest.raises(AliasError, match="no submitit alias"):
        uninstall_alias(tmp_path)


def test_alias_refuses_a_real_submitit_in_the_target(tmp_path: Path) -> None:
    (tmp_path / "submitit").mkdir()
    (tmp_path / "submitit" / "__init__.py").write_text("")
    with pytest.raises(AliasError, match="jobsub did not write"):
        install_alias(tmp_path)
    with pytest.raises(AliasError, match="not jobsub's alias"):
        uninstall_alias(tmp_path)
    assert (tmp_path / "submitit" / "__init__.py").exists()
    other = tmp_path / "other"
    (other / "submitit-1.5.4.dist-info").mkdir(parents=True)
    with pytest.raises(AliasError, match="submitit 1.5.4 is installed"):
        install_alias(other)


def test_alias_refuses_the_active_environment_where_submitit_is_installed() -> None:
    pytest.importorskip("submitit", reason="the test extra installs submitit; this checks the refusal")
    with pytest.raises(AliasError, match="jobsub will not shadow it"):
        install_alias()


def test_alias_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["install-submitit-alias", "--target", str(tmp_path)]) == 0
    assert "import submitit` is now jobsub" in capsys.readouterr().out
    assert cli(["uninstall-submitit-alias", "--target", str(tmp_path)]) == 0
    assert cli(["uninstall-submitit-alias", "--target", str(tmp_path)]) == 1
    assert "no submitit alias" in capsys.readouterr().err
