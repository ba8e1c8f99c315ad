"""Profiles: named executor settings in jobsub.toml or [tool.jobsub] of pyproject.toml (issue 29)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import jobsub
from tests import tasks

GPU = """
[profiles.gpu]
cluster = "local"
timeout_min = 5
cpus_per_task = 2

[profiles.big]
mem_gb = 4
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("JOBSUB_PROFILE", "JOBSUB_CONFIG", "JOBSUB_CLUSTER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_profile_of_jobsub_toml_sets_backend_and_parameters(project: Path) -> None:
    (project / "jobsub.toml").write_text(GPU)
    ex = jobsub.AutoExecutor(project / "runs", profile="gpu")
    assert ex.cluster == "local" and ex.parameters == {"timeout_min": 5.0, "cpus_per_task": 2}
    assert ex.submit(tasks.add, 1, 2).result(timeout=60) == 3
    given = jobsub.AutoExecutor(project / "runs", profile="gpu", cluster="debug", timeout_min=9)
    assert given.cluster == "debug" and given.parameters["timeout_min"] == 9.0  # arguments win


def test_pyproject_of_a_parent_folder_the_environment_and_its_overrides(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n\n" + GPU.replace("[profiles.", "[tool.jobsub.profiles."))
    inner = project / "src" / "deep"
    inner.mkdir(parents=True)
    monkeypatch.chdir(inner)
    monkeypatch.setenv("JOBSUB_PROFILE", "gpu")
    monkeypatch.setenv("JOBSUB_SET_TIMEOUT_MIN", "30")
    monkeypatch.setenv("JOBSUB_SET_CLUSTER", "debug")
    ex = jobsub.AutoExecutor(project / "runs")
    assert ex.profile is not None and ex.profile.source == str(project / "pyproject.toml")
    assert ex.cluster == "debug" and ex.parameters == {"timeout_min": 30.0, "cpus_per_task": 2}
    assert jobsub.AutoExecutor(project / "runs", profile="big").parameters == {"timeout_min": 30.0, "mem_gb": 4.0}


def test_no_profile_no_file_needed(project: Path) -> None:
    assert jobsub.AutoExecutor(project / "runs", cluster="local").profile is None


@pytest.mark.parametrize(
    ("text", "profile", "message"),
    [
        (GPU, "gpus", r"jobsub.toml: no profile 'gpus' \(profiles there: big, gpu\). Did you mean 'gpu'\?"),
        (GPU.replace("timeout_min", "timeout_mins"), "gpu",
         r"jobsub.toml, profile 'gpu', key 'timeout_mins': unknown parameter 'timeout_mins' .*Did you mean 'timeout_min'\?"),
        (GPU.replace("cpus_per_task = 2", "cpus_per_task = -2"), "gpu",
         r"jobsub.toml, profile 'gpu', key 'cpus_per_task': cpus_per_task=-2"),
        (GPU.replace('"local"', '"lokal"'), "gpu", r"jobsub.toml, profile 'gpu', key 'cluster': unknown cluster 'lokal'"),
        ("[profiles.gpu\n", "gpu", r"jobsub.toml: not valid TOML"),
        ("[profiles]\ngpu = 3\n", "gpu", r"jobsub.toml: profile 'gpu' must be a table"),
    ],
)
def test_errors_name_the_file_the_profile_and_the_key(project: Path, text: str, profile: str, message: str) -> None:
    (project / "jobsub.toml").write_text(text)
    with pytest.raises(jobsub.InvalidParameterError) as caught:
        jobsub.AutoExecutor(project / "runs", profile=profile)
    assert re.search(message, str(caught.value), re.DOTALL), str(caught.value)
    assert str(project / "jobsub.toml") in str(caught.value)


def test_an_override_from_the_environment_is_named_when_wrong(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "jobsub.toml").write_text(GPU)
    monkeypatch.setenv("JOBSUB_SET_MEM_GB", "lots")
    with pytest.raises(jobsub.InvalidParameterError, match=r"key 'mem_gb' \(set by JOBSUB_SET_MEM_GB\): parameter 'mem_gb' expects float"):
        jobsub.AutoExecutor(project / "runs", profile="gpu")


def test_a_profile_without_a_file_says_where_it_looked(project: Path) -> None:
    with pytest.raises(jobsub.InvalidParameterError, match="no jobsub.toml nor pyproject.toml with"):
        jobsub.AutoExecutor(project / "runs", profile="gpu")
