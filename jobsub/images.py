"""Build a ready image for the user's environment, without network if need be.

Code travels with each job (``jobsub.packaging``); third-party packages do
not: they belong in the image.  ``build_image`` derives one from a base image
that is already on the engine::

    host:   python -m pip wheel --wheel-dir CTX/wheels REQUIREMENTS   (host's pip, cache, find-links;
            offline=True adds --no-index)                              sdists/local trees become wheels)
            CTX/pip/pip-*.whl  (pip itself, found locally: the image needs no pip of its own)
    engine: FROM <base>            (must exist locally: nothing is pulled)
            COPY wheels, pip
            RUN python3 pip.whl/pip install --no-index --find-links wheels wheels/*.whl
            (built with network_mode="none" by default: the install cannot reach out)

Wheels are resolved for the host's interpreter: the base image should run
the same Python minor version (pure-Python wheels do not care).  A mismatch
fails inside the build with pip's own "no matching distribution" message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .backends.docker.engine import connect, map_docker_errors, not_found
from .errors import ImageBuildError, SubmissionError

__all__ = ["ImageBuildError", "build_image", "dockerfile", "find_pip_wheel"]

logger = logging.getLogger("jobsub.images")

_WHEELS = "/tmp/jobsub-build/wheels"
_PIP = "/tmp/jobsub-build/pip"


def find_pip_wheel(search: Sequence[str | os.PathLike[str]] = ()) -> Path:
    """A pip wheel on this machine, to run pip inside images that have none.

    Looked for in ``search``, then in the interpreter's ``ensurepip`` bundle,
    then in Debian's ``/usr/share/python-wheels``.

    Raises:
        ImageBuildError: none found (``pip download pip -d DIR`` and pass DIR in ``search``).
    """
    places = [Path(p) for p in search]
    with contextlib.suppress(ImportError):
        import ensurepip

        places.append(Path(ensurepip.__file__).parent / "_bundled")
    places.append(Path("/usr/share/python-wheels"))
    for place in places:
        found = sorted(place.glob("pip-*-py3-none-any.whl")) if place.is_dir() else []
        if found:
            return found[-1]
    raise ImageBuildError(
        f"no pip wheel found in {', '.join(map(str, places))}: run `pip download pip -d DIR` once "
        "and pass find_links=[DIR]"
    )


def dockerfile(base: str, pip_wheel: str, python: str = "python3", labels: dict[str, str] | None = None) -> str:
    """The generated Dockerfile: install every wheel of the context, offline, with a bundled pip."""
    label_lines = "".join(f"LABEL {k}={json.dumps(v)}\n" for k, v in sorted((labels or {}).items()))
    return (
        f"FROM {base}\n"
        f"COPY wheels {_WHEELS}\n"
        f"COPY pip {_PIP}\n"
        # PEP 668 distributions (Debian) refuse system-wide installs unless told; an image made for
        # the job is exactly where they belong.  An env variable, since older pips ignore it silently.
        f"RUN PIP_BREAK_SYSTEM_PACKAGES=1 {python} {_PIP}/{pip_wheel}/pip install --no-index --no-cache-dir --disable-pip-version-check "
        f"--root-user-action=ignore --find-links {_WHEELS} {_WHEELS}/*.whl \\\n"
        f" && rm -rf /tmp/jobsub-build\n"
        f"{label_lines}"
    )


def build_image(
    tag: str,
    requirements: Sequence[str],
    base: str,
    *,
    offline: bool = False,
    find_links: Sequence[str | os.PathLike[str]] = (),
    pip_args: Sequence[str] = (),
    python: str = "python3",
    network_mode: str = "none",
    base_url: str | None = None,
) -> str:
    """Build ``tag`` FROM ``base`` with ``requirements`` installed; return the image id.

    Args:
        tag: name of the new image (``"myproject:env"``).
        requirements: pip requirement specs, local wheels or project directories.
        base: an image already on the engine with ``python`` in it (e.g. the one you run jobs in).
        offline: add ``--no-index``: wheels come only from pip's cache/config and ``find_links``.
        find_links: directories of wheels for ``pip wheel`` (also searched for a pip wheel).
        pip_args: extra arguments of the host's ``pip wheel``.
        python: the base image's interpreter.
        network_mode: network of the build's RUN step; ``"none"`` proves the install is offline.
        base_url: the engine (default DOCKER_HOST).

    Raises:
        SubmissionError: ``base`` is not on the engine.
        ImageBuildError: ``pip wheel`` or the build failed (with the log tail).
        BackendError: the engine cannot be reached.
    """
    api = connect(base_url)
    try:
        return _build_from(api, tag, requirements, base, offline, find_links, pip_args, python, network_mode, base_url)
    finally:
        api.close()


def _build_from(
    api: Any, tag: str, requirements: Sequence[str], base: str, offline: bool,
    find_links: Sequence[str | os.PathLike[str]], pip_args: Sequence[str], python: str, network_mode: str,
    base_url: str | None,
) -> str:
    with map_docker_errors(f"looking up base image {base!r}", base_url):
        try:
            api.inspect_image(base)
        except not_found() as exc:
            raise SubmissionError(
                f"the base image {base!r} is not on the engine; build or load it first (nothing is pulled)"
            ) from exc
    with tempfile.TemporaryDirectory(prefix="jobsub-image-") as tmp:
        context = Path(tmp)
        wheels, pip_dir = context / "wheels", context / "pip"
        wheels.mkdir()
        pip_dir.mkdir()
        _host_wheels(requirements, wheels, offline, find_links, pip_args)
        pip_wheel = find_pip_wheel(find_links)
        shutil.copy2(pip_wheel, pip_dir / pip_wheel.name)
        labels = {"org.jobsub.base": base, "org.jobsub.requirements": json.dumps(list(requirements))}
        (context / "Dockerfile").write_text(dockerfile(base, pip_wheel.name, python, labels))
        return _build(api, context, tag, network_mode, base_url)


def _host_wheels(
    requirements: Sequence[str], wheels: Path, offline: bool, find_links: Sequence[str | os.PathLike[str]],
    pip_args: Sequence[str],
) -> None:
    command = [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--wheel-dir", str(wheels)]
    if offline:
        command.append("--no-index")
    for link in find_links:
        command += ["--find-links", os.fspath(link)]
    command += [*pip_args, *requirements]
    logger.info("building wheels: %s", " ".join(command))
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise ImageBuildError(f"`pip wheel` failed (exit {done.returncode}):\n{tail}")
    if not any(wheels.glob("*.whl")):
        raise ImageBuildError(f"`pip wheel` produced no wheel for {list(requirements)}")


def _build(api: Any, context: Path, tag: str, network_mode: str, base_url: str | None) -> str:
    log: list[str] = []
    image_id = None
    with map_docker_errors(f"building image {tag!r}", base_url):
        stream = api.build(
            path=str(context), tag=tag, rm=True, forcerm=True, pull=False, network_mode=network_mode, decode=True
        )
        for chunk in stream:
            if "stream" in chunk:
                log.append(chunk["stream"])
            if "error" in chunk:
                tail = "".join(log[-20:]) + chunk["error"]
                raise ImageBuildError(f"building {tag!r} failed:\n{tail.strip()}")
            image_id = (chunk.get("aux") or {}).get("ID", image_id)
        if image_id is None:
            image_id = api.inspect_image(tag)["Id"]
    logger.info("built %s (%s)", tag, image_id)
    return str(image_id)
