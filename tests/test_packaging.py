"""Code packaging without any engine: file selection, determinism, caching, the size cap, the bootstrap."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from jobsub import packaging
from jobsub.packaging import (
    CodePackageTooLargeError,
    bootstrap_command,
    build_code_package,
    collect_files,
    ensure_unpacked,
    unpack_code_package,
)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    _write(
        root,
        {
            "main.py": "import pkg.util\n",
            "pkg/__init__.py": "",
            "pkg/util.py": "VALUE = 1\n",
            "pkg/skip_me.py": "",
            "pkg/__pycache__/util.cpython-311.pyc": "",
            "pkg/__pycache__/stale.py": "",
            ".git/hooks/hook.py": "",
            "odd-venv/pyvenv.cfg": "home = /usr\n",
            "odd-venv/lib/site.py": "",
            "node_modules/tool/x.py": "",
            "build/lib/pkg/util.py": "",
            "mypkg.egg-info/PKG-INFO": "",
            "conf/settings.yaml": "a: 1\n",
            "data.csv": "1,2\n",
            "runs/20240101-000000-abcd/notes.py": "",
        },
    )
    return root


def test_selection_follows_includes_and_excludes(tree: Path) -> None:
    files = collect_files(
        tree, includes=["conf/*.yaml"], excludes=["skip_*.py"], exclude_paths=[tree / "runs"], include_jobsub=False
    )
    assert list(files) == ["conf/settings.yaml", "main.py", "pkg/__init__.py", "pkg/util.py"]
    assert files["main.py"] == (tree / "main.py").resolve()


def test_anchored_and_recursive_patterns(tree: Path) -> None:
    files = collect_files(tree, excludes=["pkg/**"], include_jobsub=False, exclude_paths=[tree / "runs"])
    assert list(files) == ["main.py"]
    regex = packaging._glob_regex
    assert regex("**/*.py").match("a/b/c.py") and regex("**/*.py").match("c.py")
    assert regex("data/*.py").match("data/x.py") and not regex("data/*.py").match("sub/data/x.py")
    assert regex("*.py").match("deep/down/x.py")  # no '/': any depth
    assert not regex("a?.py").match("a/.py")


def test_jobsub_output_in_the_tree_is_not_packaged(tree: Path, tmp_path: Path) -> None:
    """Job folders of other executors and unpacked packages under the working tree stay out."""
    (tree / "old_runs" / ".ids").mkdir(parents=True)
    (tree / "old_runs" / "k1" / "stray.py").parent.mkdir()
    (tree / "old_runs" / "k1" / "stray.py").write_text("x = 1\n")
    ensure_unpacked(build_code_package(tree, cache_dir=tree / "cache", include_jobsub=False))
    files = collect_files(tree, include_jobsub=False, exclude_paths=[tree / "runs"])
    assert list(files) == ["main.py", "pkg/__init__.py", "pkg/skip_me.py", "pkg/util.py"]


def test_unpacking_on_the_host_compiles_jobsub_once(tree: Path, tmp_path: Path) -> None:
    """Tasks share the compiled worker instead of each compiling it in the first wave."""
    target = ensure_unpacked(build_code_package(tree, cache_dir=tmp_path / "cache"))
    assert list((target / "jobsub" / "__pycache__").glob("worker.*.pyc"))
    assert not (target / "pkg" / "__pycache__").exists()  # the user's modules: by the first task


def test_jobsub_itself_is_packaged(tree: Path) -> None:
    files = collect_files(tree)
    assert "jobsub/worker.py" in files and "jobsub/backends/base.py" in files
    assert not any("__pycache__" in name for name in files)


def test_tarball_is_deterministic_and_content_addressed(tree: Path, tmp_path: Path) -> None:
    first = build_code_package(tree, cache_dir=tmp_path / "c1", include_jobsub=False)
    second = build_code_package(tree, cache_dir=tmp_path / "c2", include_jobsub=False)
    assert first.digest == second.digest
    assert first.path.read_bytes() == second.path.read_bytes()
    os.utime(tree / "main.py", (1, 1))  # a new mtime alone changes nothing
    assert build_code_package(tree, cache_dir=tmp_path / "c3", include_jobsub=False).digest == first.digest
    (tree / "main.py").write_text("import pkg.util  # changed\n")
    changed = build_code_package(tree, cache_dir=tmp_path / "c1", include_jobsub=False)
    assert changed.digest != first.digest and changed.path != first.path
    with tarfile.open(first.path) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.mtime, m.uid, m.gid, m.uname) for m in members} == {(packaging.FIXED_MTIME, 0, 0, "")}


def test_same_tree_is_not_tarred_twice(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = build_code_package(tree, cache_dir=tmp_path / "cache")

    def no_tar(*args: object) -> bytes:
        raise AssertionError("the cached tarball should have been reused")

    monkeypatch.setattr(packaging, "_tar_bytes", no_tar)
    again = build_code_package(tree, cache_dir=tmp_path / "cache")
    assert again == built


def test_size_cap_names_the_largest_files(tree: Path, tmp_path: Path) -> None:
    (tree / "big_table.py").write_text("X = '" + "x" * 1_200_000 + "'\n")
    with pytest.raises(CodePackageTooLargeError, match=r"over the cap of 1\.0 MB") as info:
        build_code_package(tree, cache_dir=tmp_path / "cache", max_mb=1.0)
    assert "big_table.py" in str(info.value) and "code_excludes" in str(info.value)


def test_bootstrap_unpacks_once_and_runs_the_module(tree: Path, tmp_path: Path) -> None:
    (tree / "hello.py").write_text(
        "import os, sys, pkg.util\n"
        "print('hello', sys.argv[1:], pkg.util.VALUE, os.environ['PYTHONPATH'].split(os.pathsep)[0])\n"
    )
    package = build_code_package(tree, cache_dir=tmp_path / "cache", include_jobsub=False)
    dest = tmp_path / "unpacked"
    command = bootstrap_command(sys.executable, str(package.path), str(dest), ["-m", "hello", "x", "y"])
    for _ in range(2):  # the second run finds it unpacked
        out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=tmp_path).stdout
        assert out.strip() == f"hello ['x', 'y'] 1 {dest}"
    assert (dest / ".jobsub-complete").exists() and (dest / "pkg" / "util.py").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".unpack-")) == []


def test_concurrent_unpacks_agree(tree: Path, tmp_path: Path) -> None:
    package = build_code_package(tree, cache_dir=tmp_path / "cache", include_jobsub=False)
    dest = tmp_path / "shared"
    command = bootstrap_command(sys.executable, str(package.path), str(dest), ["-m", "pkg.util"])
    procs = [subprocess.Popen(command, cwd=tmp_path) for _ in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    assert (dest / "main.py").read_text() == (tree / "main.py").read_text()


def test_unpack_ignores_paths_outside_the_destination(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        for name in ("../escaped.py", "/absolute.py", "fine.py"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"#"))
        link = tarfile.TarInfo("link.py")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    dest = tmp_path / "out" / "code"
    unpack_code_package(str(evil), str(dest))
    assert sorted(p.name for p in dest.iterdir()) == [".jobsub-complete", "fine.py"]
    assert not (tmp_path / "out" / "escaped.py").exists()


def test_bootstrap_rejects_a_bad_command_line(tmp_path: Path) -> None:
    command = bootstrap_command(sys.executable, "", str(tmp_path), ["not-a-module-flag"])
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "expected '-- -m MODULE" in done.stderr


def test_bootstrap_fetches_the_package_from_a_url(tree: Path, tmp_path: Path) -> None:
    """Cloud backends hand tasks a (presigned) URL instead of a path."""
    import functools
    import http.server
    import threading

    package = build_code_package(tree, cache_dir=tmp_path / "cache", include_jobsub=False)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(package.path.parent))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{package.path.name}"
        dest = tmp_path / "from-url"
        command = bootstrap_command(sys.executable, url, str(dest), ["-m", "pkg.util"])
        subprocess.run(command, check=True, cwd=tmp_path, timeout=60)
        assert (dest / "pkg" / "util.py").read_text() == "VALUE = 1\n"
    finally:
        server.shutdown()
        server.server_close()


def test_old_cache_entries_are_pruned(tree: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    old = build_code_package(tree, cache_dir=cache, include_jobsub=False)
    packaging.ensure_unpacked(old)
    os.utime(old.path, (0, 0))
    (tree / "main.py").write_text("# new\n")
    packaging.prune_cache(cache, keep=1, min_age_s=3600)
    assert old.path.exists()  # still the only one
    new = build_code_package(tree, cache_dir=cache, include_jobsub=False)
    packaging.prune_cache(cache, keep=1, min_age_s=3600)
    assert new.path.exists() and not old.path.exists()
    assert not old.path.with_name(old.name).exists()
