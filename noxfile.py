"""Developer sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s typecheck``, ``nox -s docs``.

``tests`` runs the same command as CI (scripts/test.sh), which starts the
Slurm and Docker services the suite needs when it runs as root.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]


@nox.session
def tests(session: nox.Session) -> None:
    session.run("bash", "scripts/test.sh", *session.posargs, external=True, env={"PYTHON": "python"})


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "jobsub", "tests", "benchmarks", "examples")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[all]", "mypy>=1.10")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Run every docs code block, check links and parameter tables, and build the site (warnings are errors)."""
    session.install("-e", ".[docs,progress,plot]")
    session.run("python", "scripts/check_docs.py")
    session.run("mkdocs", "build", "--strict", env={"NO_MKDOCS_2_WARNING": "1"})
