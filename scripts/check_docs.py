"""Docs check: every ```python block of README.md and docs/ runs, relative links exist, parameter tables are current.

The blocks of a page run in order, in one namespace, in a fresh interpreter
in an empty directory, on the local backend (``JOBSUB_CLUSTER=local``), with
the repository importable (``from tests...``).  A page may prepare what its
fragments assume with a hidden block::

    <!-- docs-setup
    def train(config): ...
    -->

and a block that cannot run here is preceded by ``<!-- docs: not run (WHY) -->``
(the reason is required, and printed).  ``--compile-only`` only compiles.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(?:<!-- docs: not run \((?P<why>[^)]*)\) -->\n)?```python\n(?P<code>.*?)```", re.S)
SETUP = re.compile(r"<!-- docs-setup\n(?P<code>.*?)-->", re.S)
PAGE_TIMEOUT_S = 300

# what runs after a page's blocks: every job they left is waited for, so none outlives its folder
_EPILOGUE = """
import jobsub as _j
_jobs = [v for v in list(globals().values()) for v in (v if isinstance(v, list) else [v]) if isinstance(v, _j.Job)]
for _job in _jobs:
    _job.wait(timeout=120)
"""


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def run_page(page: Path, text: str) -> tuple[list[str], list[str]]:
    """Run the page's blocks; return (problems, blocks not run with their reasons)."""
    problems, skipped, code = [], [], []
    for setup in SETUP.finditer(text):
        code.append(setup["code"])
    for i, block in enumerate(BLOCK.finditer(text)):
        name = f"{page.relative_to(ROOT)}[block {i}]"
        if block["why"] is not None:
            if not block["why"].strip():
                problems.append(f"{name}: 'not run' needs a reason")
            skipped.append(f"{name}: {block['why']}")
            continue
        try:
            compile(block["code"], name, "exec")
        except SyntaxError as exc:
            problems.append(f"{name} does not compile: {exc}")
            continue
        code.append(f"print({name!r}, file=__import__('sys').stderr)\n{block['code']}")
    if "--compile-only" in sys.argv or len(code) == len(SETUP.findall(text)):
        return problems, skipped
    env = {**os.environ, "JOBSUB_CLUSTER": "local", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("JOBSUB_PROFILE", None)
    with tempfile.TemporaryDirectory(prefix="jobsub-docs-") as where:
        ran = subprocess.run([sys.executable, "-c", "\n".join([*code, _EPILOGUE])], cwd=where, env=env,
                             capture_output=True, text=True, timeout=PAGE_TIMEOUT_S, check=False)
    if ran.returncode:
        tail = "\n".join(ran.stderr.strip().splitlines()[-15:])
        problems.append(f"{page.relative_to(ROOT)}: its blocks failed (exit {ran.returncode}):\n{tail}")
    return problems, skipped


def main() -> int:
    problems: list[str] = []
    skipped: list[str] = []
    for page in pages():
        text = page.read_text()
        found, not_run = run_page(page, text)
        problems += found
        skipped += not_run
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            if not (page.parent / target).exists():
                problems.append(f"{page.relative_to(ROOT)}: broken link {target}")
    sys.path.insert(0, str(ROOT / "scripts"))
    import parameter_docs

    if parameter_docs.main(["--check"]):
        problems.append("parameter tables are stale: python scripts/parameter_docs.py")
    if parameter_docs.undocumented():
        problems.append(f"keys without a docstring: {', '.join(parameter_docs.undocumented())}")
    for line in skipped:
        print(f"not run: {line}")
    print("\n".join(problems) or "docs: every code block ran, every link resolves, every key is documented")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
