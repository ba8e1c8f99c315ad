"""update_parameters: common keys, backend-prefixed keys, None as "not set", clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

import jobsub


def test_common_keys_are_typed(tmp_path: Path) -> None:
    ex = jobsub.AutoExecutor(tmp_path, cluster="local")
    ex.update_parameters(timeout_min=30, mem_gb=2, cpus_per_task=4, gpus_per_node=None, name="x")
    assert ex.parameters == {"timeout_min": 30.0, "mem_gb": 2.0, "cpus_per_task": 4, "name": "x"}
    with pytest.raises(jobsub.InvalidParameterError, match="cpus_per_task.*expects int"):
        ex.update_parameters(cpus_per_task="four")
    with pytest.raises(ValueError):  # submitit users catch ValueError for bad values
        ex.update_parameters(tasks_per_node=1.5)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("nodes", 0, "nodes=0: must be at least 1"),  # would run nothing and report success
        ("tasks_per_node", 0, "tasks_per_node=0: must be at least 1"),
        ("timeout_min", 0, r"timeout_min=0.0: must be more than 0"),
        ("timeout_min", -1, r"timeout_min=-1.0: must be more than 0"),
        ("mem_gb", 0, r"mem_gb=0.0: must be more than 0"),
        ("array_parallelism", 0, "array_parallelism=0: must be at least 1"),
        ("slurm_timeout_min", 0, r"slurm_timeout_min=0.0: must be more than 0"),  # overrides too, by their name
    ],
)
def test_values_out_of_range_are_refused_when_set(tmp_path: Path, key: str, value: float, message: str) -> None:
    ex = jobsub.AutoExecutor(tmp_path, cluster="local")
    with pytest.raises(jobsub.InvalidParameterError, match=message):
        ex.update_parameters(**{key: value})
    assert key not in ex.parameters


def test_type_errors_name_the_key_as_typed(tmp_path: Path) -> None:
    ex = jobsub.AutoExecutor(tmp_path, cluster="local")
    with pytest.raises(jobsub.InvalidParameterError, match="parameter 'slurm_partition' expects str, got int 5"):
        ex.update_parameters(slurm_partition=5)


def test_none_means_not_set(tmp_path: Path) -> None:
    ex = jobsub.AutoExecutor(tmp_path, cluster="local")
    ex.update_parameters(timeout_min=5)
    ex.update_parameters(timeout_min=None, slurm_partition=None, slurm_mem_per_cpu=None)
    assert "timeout_min" not in ex.parameters


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    ex = jobsub.AutoExecutor(tmp_path, cluster="local")
    with pytest.raises(jobsub.InvalidParameterError) as info:
        ex.update_parameters(timeout_mins=3)
    assert "Did you mean 'timeout_min'?" in str(info.value)
    assert "Valid parameters:" in str(info.value) and "mem_gb" in str(info.value)
    assert isinstance(info.value, NameError)  # what submitit raised for unknown keys


def test_prefixed_keys_of_other_backends_are_checked_then_ignored(tmp_path: Path) -> None:
    ex = jobsub.AutoExecutor(tmp_path, cluster="local")
    ex.update_parameters(local_visible_gpus=[0, 1])
    with pytest.raises(jobsub.InvalidParameterError, match="Did you mean 'local_visible_gpus'"):
        ex.update_parameters(local_visible_gpu=[0])
    with pytest.raises(jobsub.InvalidParameterError, match="prefix"):
        ex.update_parameters(no_backend_has_this_key="gpu")
    with pytest.warns(DeprecationWarning, match="Use 'slurm_partition' instead"):  # as submitit did
        ex.update_parameters(partition="gpu")
    assert ex.parameters.get("visible_gpus") == [0, 1]


def test_backend_override_of_a_common_key(tmp_path: Path) -> None:
    ex = jobsub.AutoExecutor(tmp_path, cluster="local")
    ex.update_parameters(timeout_min=10, local_timeout_min=2, debug_timeout_min=99)
    assert ex._resolve().common.timeout_min == 2  # local's own value wins on local


def test_constructor_takes_prefixed_keys(tmp_path: Path) -> None:
    ex = jobsub.AutoExecutor(tmp_path, cluster="local", local_max_num_timeout=5)
    assert ex._resolve().common.max_num_timeout == 5


def test_unknown_cluster(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown cluster 'slrum'.*Did you mean 'slurm'"):
        jobsub.AutoExecutor(tmp_path, cluster="slrum")


def test_which(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JOBSUB_CLUSTER", "debug")
    assert jobsub.AutoExecutor.which() == "debug"
    assert jobsub.AutoExecutor(tmp_path).cluster == "debug"
    monkeypatch.delenv("JOBSUB_CLUSTER")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch anywhere
    assert jobsub.AutoExecutor.which() == "local"


def test_parameters_frozen_inside_batch(tmp_path: Path) -> None:
    ex = jobsub.AutoExecutor(tmp_path, cluster="debug")
    with pytest.raises(jobsub.InvalidStateError), ex.batch(allow_implicit_submissions=True):
        ex.update_parameters(timeout_min=1)


def test_pickle_size_cap(tmp_path: Path) -> None:
    ex = jobsub.AutoExecutor(tmp_path, cluster="debug", max_pickle_size_gb=1e-6)
    with pytest.raises(jobsub.SubmissionError, match="max_pickle_size_gb"):
        ex.submit(len, b"x" * 10_000)
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
