"""The storage protocol, written once: an implementation opts in by subclassing ``StorageSuite``.

::

    class TestS3Storage(StorageSuite):
        @pytest.fixture
        def storage(self, ...) -> Storage: ...   # a fresh, empty store for each test
"""

from __future__ import annotations

import threading

import pytest

from jobsub.errors import CorruptResultError
from jobsub.folder import JobFolder, lookup_id, register_id
from jobsub.storage import Storage


class StorageSuite:
    """Behaviour every ``Storage`` must show; subclasses provide the ``storage`` fixture."""

    @pytest.fixture
    def storage(self) -> Storage:
        raise NotImplementedError("a StorageSuite subclass provides the storage fixture")

    def test_round_trip_and_missing(self, storage: Storage) -> None:
        storage.write_bytes("a/b/c.bin", b"xyz")
        assert storage.read_bytes("a/b/c.bin") == b"xyz"
        assert storage.exists("a/b/c.bin") and storage.exists("a/b")
        with pytest.raises(FileNotFoundError):
            storage.read_bytes("a/b/nope")
        assert not storage.exists("a/nope")

    def test_overwrite_is_whole(self, storage: Storage) -> None:
        storage.write_bytes("k", b"1" * 1000)
        storage.write_bytes("k", b"2")
        assert storage.read_bytes("k") == b"2"

    def test_create_only_never_replaces(self, storage: Storage) -> None:
        storage.write_bytes("r/0.0.pkl", b"first", create_only=True)
        with pytest.raises(FileExistsError):
            storage.write_bytes("r/0.0.pkl", b"second", create_only=True)
        assert storage.read_bytes("r/0.0.pkl") == b"first"
        assert storage.list("r") == ["r/0.0.pkl"]  # the loser leaves nothing behind

    def test_racing_writers_one_wins(self, storage: Storage) -> None:
        """Two tasks (a retried one and its twin) create the same result: exactly one wins, the reader sees it."""
        outcomes: dict[bytes, str] = {}
        barrier = threading.Barrier(2)

        def write(data: bytes) -> None:
            barrier.wait()
            try:
                storage.write_bytes("race/result", data, create_only=True)
                outcomes[data] = "won"
            except FileExistsError:
                outcomes[data] = "lost"

        threads = [threading.Thread(target=write, args=(d,)) for d in (b"A" * 100_000, b"B" * 100_000)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes.values()) == ["lost", "won"]
        winner = next(d for d, o in outcomes.items() if o == "won")
        assert storage.read_bytes("race/result") == winner

    def test_list_and_delete(self, storage: Storage) -> None:
        for name in ("d/x", "d/y", "d/sub/z"):
            storage.write_bytes(name, b"")
        assert storage.list("d") == ["d/sub", "d/x", "d/y"]
        assert storage.list("d/") == ["d/sub", "d/x", "d/y"]
        assert storage.list("nothing") == []
        storage.delete("d")
        assert storage.list("d") == [] and not storage.exists("d/x")

    def test_binary_and_empty_objects(self, storage: Storage) -> None:
        data = bytes(range(256)) * 64
        storage.write_bytes("bin", data)
        storage.write_bytes("empty", b"")
        assert storage.read_bytes("bin") == data and storage.read_bytes("empty") == b""
        assert storage.exists("empty")

    def test_check_writable_and_task_env(self, storage: Storage) -> None:
        storage.check_writable()
        env = storage.task_env()
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
        assert not any("SECRET" in k or "TOKEN" in k or "PASSWORD" in k for k in env)

    def test_result_framing_detects_damage(self, storage: Storage) -> None:
        folder = JobFolder(storage, "key1")
        assert folder.read_result(0, 0) is None
        folder.write_result(0, 0, b"payload" * 100, ok=True)
        assert folder.read_result(0, 0) == b"payload" * 100
        raw = storage.read_bytes(folder.result_key(0, 0))
        storage.write_bytes(folder.result_key(0, 0), raw[:-10])
        with pytest.raises(CorruptResultError):
            folder.read_result(0, 0)
        storage.write_bytes(folder.result_key(0, 0), raw[:-1] + bytes([raw[-1] ^ 1]))
        with pytest.raises(CorruptResultError):
            folder.read_result(0, 0)

    def test_id_index(self, storage: Storage) -> None:
        register_id(storage, "1234", "key9")
        assert lookup_id(storage, "1234") == "key9"
        assert lookup_id(storage, "1234_17") == "key9"
        assert lookup_id(storage, "999") is None
