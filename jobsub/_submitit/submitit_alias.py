"""An opt-in ``submitit`` package whose every module is jobsub's: tools built on submitit run unchanged.

``jobsub install-submitit-alias`` writes it into the active environment's
site-packages; ``jobsub uninstall-submitit-alias`` removes it.  It refuses
to go where a real submitit is installed or importable: the alias must never
hide the real package, nor the real one the alias, without the user knowing.

The alias holds no code of its own.  Each submitit module path maps to the
jobsub module of the same path (``submitit.slurm.slurm`` ->
``jobsub.slurm.slurm``)::

    submitit/__init__.py, auto/, core/, local/, slurm/    packages: re-export jobsub's package names
    submitit/helpers.py, core/utils.py, slurm/slurm.py... modules: replace themselves in sys.modules
                                                          by jobsub's module, so both names are one
                                                          object (monkeypatching one patches the other)
    submitit/JOBSUB_ALIAS                                 the marker uninstall looks for
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import shutil
import sysconfig
from pathlib import Path

from .._version import __version__

__all__ = ["MARKER", "MODULES", "AliasError", "alias_files", "install_alias", "site_directory", "uninstall_alias"]

logger = logging.getLogger("jobsub")

MODULES = (
    "auto", "auto.auto", "core", "core.core", "core.job_environment", "core.submission", "core.utils",
    "helpers", "local", "local.debug", "local.local", "slurm", "slurm.slurm",
)
"""submitit's module paths (below ``submitit``) that jobsub mirrors, each by the same path below ``jobsub``."""

MARKER = "JOBSUB_ALIAS"

_PACKAGE = '''"""{alias}, served by {target} (written by `jobsub install-submitit-alias`)."""

import {target} as _target
from {target} import *  # noqa: F403


def __getattr__(name):
    return getattr(_target, name)
'''

_MODULE = '''"""{alias} is {target} (written by `jobsub install-submitit-alias`)."""

import sys

import {target}

sys.modules[__name__] = {target}
'''


class AliasError(Exception):
    """The alias cannot be installed or removed here (the message says why and what to do)."""


def _is_package(path: str) -> bool:
    return any(other.startswith(path + ".") for other in MODULES)


def alias_files() -> dict[str, str]:
    """Relative path -> text of every file of the alias package (``submitit/...``)."""
    files = {
        "submitit/__init__.py": _PACKAGE.format(alias="submitit", target="jobsub"),
        f"submitit/{MARKER}": (
            f"This submitit package is an alias of jobsub {__version__}; every module is jobsub's.\n"
            "Remove it with: jobsub uninstall-submitit-alias\n"
        ),
    }
    for path in MODULES:
        alias, target = f"submitit.{path}", f"jobsub.{path}"
        relative = "submitit/" + path.replace(".", "/")
        if _is_package(path):
            files[f"{relative}/__init__.py"] = _PACKAGE.format(alias=alias, target=target)
        else:
            files[f"{relative}.py"] = _MODULE.format(alias=alias, target=target)
    return files


def site_directory() -> Path:
    """The active environment's site-packages (where pip would install a pure-Python package)."""
    return Path(sysconfig.get_path("purelib"))


def _real_submitit(site: Path, *, whole_environment: bool) -> str | None:
    """Why a real submitit is in the way in ``site`` (and, for the active environment, on its path), or None."""
    for dist_info in sorted(site.glob("submitit-*.dist-info")):
        return f"{dist_info.name.removesuffix('.dist-info').replace('-', ' ')} is installed in {site}"
    existing = site / "submitit"
    if existing.exists() and not (existing / MARKER).exists():
        return f"{existing} holds a submitit package that jobsub did not write"
    if whole_environment:
        try:
            dist = importlib.metadata.distribution("submitit")
        except importlib.metadata.PackageNotFoundError:
            pass
        else:
            return f"submitit {dist.version} is installed in this environment ({dist.locate_file('')})"
        spec = importlib.util.find_spec("submitit")
        if spec is not None and spec.origin and not (Path(spec.origin).parent / MARKER).exists():
            return f"a submitit package is importable from {Path(spec.origin).parent}"
    return None


def install_alias(site: Path | None = None) -> Path:
    """Write the alias package into ``site`` (default: the active environment's site-packages).

    A previous alias there is replaced (e.g. after upgrading jobsub).

    Raises:
        AliasError: a real submitit is installed or importable here.
    """
    problem = _real_submitit(site or site_directory(), whole_environment=site is None)
    site = site or site_directory()
    if problem:
        raise AliasError(
            f"{problem}; jobsub will not shadow it. Run `pip uninstall submitit` first "
            "if you want tools that import submitit to run on jobsub."
        )
    root = site / "submitit"
    if root.exists():
        shutil.rmtree(root)
    for relative, text in alias_files().items():
        path = site / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    importlib.invalidate_caches()
    logger.info("wrote the submitit alias of jobsub in %s", root)
    return root


def uninstall_alias(site: Path | None = None) -> Path:
    """Remove the alias package from ``site`` (default: the active environment's site-packages).

    Raises:
        AliasError: there is no alias there, or the ``submitit`` there is a real one.
    """
    site = site_directory() if site is None else site
    root = site / "submitit"
    if not root.exists():
        raise AliasError(f"no submitit alias in {site}")
    if not (root / MARKER).exists():
        raise AliasError(f"{root} is not jobsub's alias (no {MARKER} file): remove a real submitit with pip")
    shutil.rmtree(root)
    importlib.invalidate_caches()
    logger.info("removed the submitit alias from %s", site)
    return root
