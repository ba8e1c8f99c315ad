"""scripts/start-slurm.sh next to a Slurm it did not start, and with a drained node of its own.

Real: the script, and the cluster it started (the one every Slurm test uses: nothing here stops
or reconfigures it; a second run of the script only checks it). The foreign daemon is played by
a real process named ``slurmctld`` (a copy of ``sleep``): what the script judges is the process
table and its own pid files.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import slurm_env
from tests.conftest import wait_until

SCRIPT = Path(__file__).parent.parent / "scripts" / "start-slurm.sh"
RUN_DIR = Path(os.environ.get("JOBSUB_SLURM_DIR", "/var/lib/jobsub-slurm")) / "run"


@pytest.fixture(autouse=True)
def _our_cluster() -> None:
    slurm_env.require()
    if os.geteuid() != 0:
        pytest.skip("start-slurm.sh runs as root")
    if not (RUN_DIR / "slurmctld.pid").exists():
        pytest.skip(f"the running Slurm was not started by scripts/start-slurm.sh (no {RUN_DIR}/slurmctld.pid)")


@pytest.fixture
def foreign_slurmctld(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    fake = tmp_path / "slurmctld"
    shutil.copy("/bin/sleep", fake)
    proc = subprocess.Popen([str(fake), "600"])
    yield proc
    proc.kill()
    proc.wait()


def _start_slurm(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, timeout=300, env={**os.environ, **env}, check=False
    )


def _node_state() -> str:
    host = socket.gethostname().split(".")[0]
    return subprocess.run(["sinfo", "-h", "-n", host, "-o", "%t"], capture_output=True, text=True, check=True).stdout.strip()


def test_a_slurm_it_did_not_start_is_refused_by_name(foreign_slurmctld: subprocess.Popen[bytes]) -> None:
    run = _start_slurm()
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"slurmctld pid {foreign_slurmctld.pid}" in run.stderr
    assert "JOBSUB_SLURM_TAKEOVER=1" in run.stderr and "Nothing was changed" in run.stderr
    assert foreign_slurmctld.poll() is None  # left alone
    assert _node_state().rstrip("*") in ("idle", "mix", "alloc")


def test_takeover_stops_the_foreign_daemon_and_keeps_its_own(foreign_slurmctld: subprocess.Popen[bytes]) -> None:
    ours = (RUN_DIR / "slurmctld.pid").read_text()
    run = _start_slurm(JOBSUB_SLURM_TAKEOVER="1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"taking over: stopping the foreign slurmctld (pid {foreign_slurmctld.pid}" in run.stdout
    wait_until(lambda: foreign_slurmctld.poll() is not None, 10, "the foreign daemon to end")
    assert (RUN_DIR / "slurmctld.pid").read_text() == ours  # its own daemons untouched


def test_a_drained_node_of_its_own_is_resumed() -> None:
    host = socket.gethostname().split(".")[0]
    subprocess.run(["scontrol", "update", f"NodeName={host}", "State=DRAIN", "Reason=jobsub test: drained"], check=True)
    try:
        assert _node_state().rstrip("*") in ("drain", "drng")
        run = _start_slurm()
        assert run.returncode == 0, run.stdout + run.stderr
        # a trailing "*": slurmd has not answered the controller's ping yet (a loaded machine)
        assert _node_state().rstrip("*") in ("idle", "mix", "alloc")
    finally:
        if _node_state().rstrip("*") in ("drain", "drng"):
            subprocess.run(["scontrol", "update", f"NodeName={host}", "State=RESUME"], check=False)
