"""Where job folders live: a local (or shared) path, and later object stores.

A storage is a handful of primitives on relative keys (``"key/result/0.0.pkl"``);
everything else (layout, framing, atomicity rules) is built on them in
``jobsub.folder``.  Object-store implementations (``s3://``, ``gs://``) plug in
through ``open_storage`` and are imported only when such a URL is used.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import os

TYPE_CHECKING = False  # as typing.TYPE_CHECKING: every task imports this module; typing and pathlib wait
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from ._protocol import Storage

__all__ = ["LocalStorage", "MemoryStorage", "Storage", "folder_text", "open_storage", "store_environment"]


def __getattr__(name: str) -> object:
    """``Storage``, the protocol, is defined on first use: it needs ``typing``, which tasks do without."""
    if name == "Storage":
        from ._protocol import Storage

        return Storage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_counter = itertools.count()


class LocalStorage:
    """A directory on a local or shared (NFS, Lustre) file system.

    Who may *read* follows the user's umask (a team often shares the folder
    that holds a job's outputs; ``folder_mode`` sets a job folder's own mode),
    but nothing is ever created writable by others: job folders hold pickled
    code and results that another user must not replace.  ``private`` files
    (those that carry the job's environment) are 0600 whatever the umask.
    Paths are plain strings inside (``pathlib`` costs every task start ~3 ms);
    ``local_path`` still hands out a ``Path``.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        text = os.path.expanduser(os.fspath(root))
        if not os.path.isabs(text):
            text = os.path.join(os.getcwd(), text)
        # as pathlib spells it: no empty or "." parts, ".." kept
        self.root = "/" + "/".join(part for part in text.split("/") if part not in ("", "."))
        self.url = self.root
        self._made: set[str] = set()

    def local_file(self, key: str) -> str:
        return os.path.join(self.root, key)

    def local_path(self, key: str) -> Path:
        from pathlib import Path

        return Path(self.local_file(key))

    def read_bytes(self, key: str) -> bytes:
        path = self.local_file(key)
        directory = os.path.dirname(path)
        if directory not in self._made:
            self._check_directory(directory)
        with open(path, "rb") as f:
            _check_owner(f.fileno(), f.name)  # on the open file: no window to swap it after the check
            return f.read()

    def _check_directory(self, directory: str) -> None:
        """Refuse a directory inside the root that another user owns or may write (once a process).

        In a root others may write into (a sticky ``/tmp``-like folder), another
        user could make ``.cache/`` first and then rename the owner's files in
        it; the files' own owner check cannot see that.
        """
        import stat

        uid = os.getuid()
        level = directory
        while level.startswith(self.root + "/") and level not in self._made:  # the root itself: check_writable
            try:
                st = os.lstat(level)
            except FileNotFoundError:
                return  # nothing to read there (yet); a write makes it, and checks it then
            if st.st_uid != uid or st.st_mode & 0o022 or not stat.S_ISDIR(st.st_mode):
                raise PermissionError(
                    f"{level} belongs to uid {st.st_uid} (mode {st.st_mode & 0o7777:o}), not to this user "
                    f"(uid {uid}) alone: another user could swap the files jobsub keeps there. Remove it, or use "
                    "an executor folder of your own"
                )
            level = os.path.dirname(level)
        self._made.add(directory)

    def write_bytes(self, key: str, data: bytes, *, create_only: bool = False, private: bool = False) -> None:
        directory, name = os.path.split(self.local_file(key))
        if directory not in self._made:  # a stat and a mkdir saved on every later write there
            os.makedirs(directory, mode=0o755, exist_ok=True)  # the umask decides who reads; no one else writes
            self._check_directory(directory)
        # temp file in the same directory + rename: atomic on POSIX file systems
        tmp = os.path.join(directory, f".{name}.{os.getpid()}.{next(_counter)}.tmp")
        flags, mode = os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644
        try:
            fd = os.open(tmp, flags, mode)
        except FileNotFoundError:
            # a directory that was made once and removed since: again, but only its last level (a job
            # folder someone deleted is not brought back by a late write into it)
            if not os.path.isdir(os.path.dirname(directory)):
                raise
            os.makedirs(directory, mode=0o755, exist_ok=True)
            fd = os.open(tmp, flags, mode)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            if create_only:
                os.link(tmp, os.path.join(directory, name))  # atomic, and fails if the name exists
                os.unlink(tmp)
            else:
                os.replace(tmp, os.path.join(directory, name))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def check_credentials(self) -> None:
        """A local disk needs none."""

    def check_writable(self) -> None:
        """Create the root (0700) and write a probe file; ``PermissionError`` naming the folder if not.

        A root that other users may write into (and rename or delete in: no
        sticky bit) is refused: they could replace a job's folder with their
        own and have its pickles run as this user.
        """
        probe = f".jobsub-write-test-{os.getpid()}"
        try:
            self.write_bytes(probe, b"")
            os.unlink(self.local_file(probe))
        except OSError as exc:
            raise PermissionError(f"jobsub cannot write job folders in {self.root}: {exc}") from exc
        mode = os.stat(self.root).st_mode
        if mode & 0o002 and not mode & 0o1000:
            raise PermissionError(
                f"{self.root} is writable by every user (mode {mode & 0o7777:o}): another user could replace "
                "a job's files there. Use a folder of your own, or `chmod o-w` it (or make it sticky, like /tmp)"
            )

    def task_env(self) -> dict[str, str]:
        return {}

    def exists(self, key: str) -> bool:
        return os.path.exists(self.local_file(key))

    def list(self, prefix: str) -> list[str]:
        """Children of ``prefix``; symbolic links (``runs/1234`` made for a ``%j`` folder) are not part of the store."""
        base = self.local_file(prefix)
        try:
            entries = list(os.scandir(base))
        except (FileNotFoundError, NotADirectoryError):
            return []
        # the prefix as given, then the name: os.path.relpath costs ~20 us an entry (10,000 results: 0.2 s)
        head = prefix.strip("/") + "/" if prefix.strip("/") else ""
        return sorted(head + e.name for e in entries if not e.name.startswith(".") and not e.is_symlink())

    def delete(self, key: str) -> None:
        path = self.local_file(key)
        if os.path.isdir(path) and not os.path.islink(path):
            import shutil

            shutil.rmtree(path)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def __repr__(self) -> str:
        return f"LocalStorage({self.url!r})"


class MemoryStorage:
    """An in-memory store: the reference implementation for tests of the protocol."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._objects: dict[str, bytes] = {}

    def local_path(self, key: str) -> None:
        return None

    def local_file(self, key: str) -> None:
        return None

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._objects[key]
        except KeyError:
            raise FileNotFoundError(f"{self.url}/{key}") from None

    def write_bytes(self, key: str, data: bytes, *, create_only: bool = False, private: bool = False) -> None:
        if create_only and key in self._objects:
            raise FileExistsError(f"{self.url}/{key}")
        self._objects[key] = bytes(data)

    def check_credentials(self) -> None:
        pass

    def check_writable(self) -> None:
        pass

    def task_env(self) -> dict[str, str]:
        return {}

    def exists(self, key: str) -> bool:
        return key in self._objects or any(k.startswith(key.rstrip("/") + "/") for k in self._objects)

    def list(self, prefix: str) -> list[str]:
        prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
        children = {prefix + k[len(prefix) :].split("/", 1)[0] for k in self._objects if k.startswith(prefix)}
        return sorted(c for c in children if not c.rpartition("/")[2].startswith("."))

    def delete(self, key: str) -> None:
        for k in [k for k in self._objects if k == key or k.startswith(key.rstrip("/") + "/")]:
            del self._objects[k]


def _check_owner(fd: int, name: str) -> None:
    """Refuse a file that another user owns or may write: jobsub unpickles what it reads.

    Another user who can write into a job folder (a world-writable parent, a
    shared scratch space) could otherwise replace a result and have the
    client run their code when it unpickles it.
    """
    st = os.fstat(fd)
    uid = os.getuid()
    if st.st_uid != uid:
        raise PermissionError(
            f"{name} belongs to uid {st.st_uid}, not to this user (uid {uid}): jobsub does not read job files "
            "that someone else may have written"
        )
    if st.st_mode & 0o022:
        raise PermissionError(
            f"{name} is writable by other users (mode {st.st_mode & 0o777:o}): jobsub does not read job files "
            "that someone else may have written"
        )


# scheme -> (dotted class path, install hint, what its SDK reads from the environment: names or
# prefixes ending in "_"); imported only when such a URL is used
_REGISTRY: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "s3": ("jobsub.storage.s3:S3Storage", "pip install 'jobsub[aws]'", ("AWS_", "BOTO_")),
    "gs": (
        "jobsub.storage.gcs:GCSStorage", "pip install 'jobsub[gcp]'",
        ("GOOGLE_", "GCE_", "CLOUDSDK_", "STORAGE_EMULATOR_HOST"),
    ),
}
# what any SDK's HTTP stack reads: where the home directory (its config files) and proxies are,
# which CAs to trust
_NETWORK_VARIABLES = frozenset({
    "HOME", "PATH", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR",
})


def store_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What the object stores' SDKs read from ``environ`` (default: this process's environment).

    Credentials, endpoints, profiles, regions, emulators, proxies: a daemon
    that looks at a submission's folders (the local server, the Docker
    dispatcher) receives this with the submission, over its private socket,
    and reaches the folders with it rather than with the environment it was
    started in (``open_storage(url, env=...)``).  Never written to a folder.
    """
    environ = os.environ if environ is None else environ
    names = tuple(name for _, _, names in _REGISTRY.values() for name in names)
    return {
        name: value for name, value in environ.items()
        if name in _NETWORK_VARIABLES or name in names or name.startswith(tuple(n for n in names if n.endswith("_")))
    }


def folder_text(url: str | os.PathLike[str]) -> str:
    """``url`` as text, a URL that went through ``pathlib.Path`` (``job.paths.folder`` of a
    ``gs://`` folder is ``gs:/bucket/x``) given its ``//`` back."""
    text = os.fspath(url)
    if not text.startswith("/") and ":/" in text and "://" not in text:
        text = text.replace(":/", "://", 1)
    return text


def open_storage(url: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Storage:
    """The storage for ``url``: a path, or ``scheme://bucket/prefix`` of a registered store.

    ``env``: an object store's SDK client is made from this environment
    (``store_environment()`` of the process a submission came from) instead
    of this process's; a path ignores it.
    """
    text = folder_text(url)
    scheme, sep, _ = text.partition("://")
    if not sep or scheme == "file":
        return LocalStorage(text.removeprefix("file://"))
    if scheme not in _REGISTRY:
        raise ValueError(
            f"unknown storage scheme {scheme!r} in {text!r}; known: file, {', '.join(_REGISTRY)}"
        )
    target, hint, _ = _REGISTRY[scheme]
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ImportError(
            f"{scheme}:// job folders need an extra ({hint}) and a backend that supports them: {exc}"
        ) from exc
    storage: Storage = getattr(module, cls_name)(text, **({} if env is None else {"env": dict(env)}))
    return storage
