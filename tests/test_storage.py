"""The local and in-memory stores run the storage suite; what is special to each follows."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jobsub.storage import LocalStorage, MemoryStorage, Storage, open_storage
from tests.conformance.storage import StorageSuite


class TestLocalStorage(StorageSuite):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> Storage:
        return LocalStorage(tmp_path)


class TestMemoryStorage(StorageSuite):
    @pytest.fixture
    def storage(self) -> Storage:
        return MemoryStorage()


def test_local_writes_are_atomic_and_leave_no_temp_files(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.write_bytes("x/y", b"data")
    storage.write_bytes("x/z", b"data", create_only=True)
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["y", "z"]


def test_local_refuses_files_others_may_write(tmp_path: Path) -> None:
    """A job file that another user could have replaced is never read (jobsub unpickles what it reads)."""
    storage = LocalStorage(tmp_path)
    storage.write_bytes("k/result", b"data")
    os.chmod(tmp_path / "k" / "result", 0o666)
    with pytest.raises(PermissionError, match="writable by other users"):
        storage.read_bytes("k/result")


def test_open_storage_registry(tmp_path: Path) -> None:
    assert isinstance(open_storage(tmp_path), LocalStorage)
    assert isinstance(open_storage(f"file://{tmp_path}"), LocalStorage)
    with pytest.raises(ValueError, match="unknown storage scheme 'ftp'"):
        open_storage("ftp://host/x")
