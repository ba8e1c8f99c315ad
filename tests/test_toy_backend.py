"""The kit proved: a toy cloud backend (tests/toy_backend.py, built only from jobsub.cloud over
the fake scheduler of tests/fake_cloud.py) passes the shared suites, as every backend does.

What is real: the worker, the job folders, the tasks' processes, the kit.  What is played: the
scheduler's control plane (a directory of records).
"""

from __future__ import annotations

from pathlib import Path

from tests.conformance.behaviour import BackendSuite
from tests.toy_backend import ToyBackend


class TestToyBackend(BackendSuite):
    """Its records live in a directory of this machine: nothing to start, nothing to skip."""

    cluster = "toy"


def test_the_toy_is_small() -> None:
    """What a new cloud backend writes, beside the kit: about 150 lines."""
    source = Path(__file__).with_name("toy_backend.py").read_text().splitlines()
    assert len(source) <= 150, len(source)
    assert ToyBackend.capabilities.local_folders
