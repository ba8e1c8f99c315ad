"""A notebook as a new user runs it (issue 29): executed by nbconvert, rendered to PNG by headless Chromium.

Real: a Jupyter kernel (ipykernel) runs the cells, jobs run on the local backend, nbconvert writes
the HTML and Debian's Chromium draws it.  The HTML and the PNG are kept in $JOBSUB_EVIDENCE_DIR
when it is set (the PNG is what a person looks at).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]

CELLS = [
    "import jobsub\n\nex = jobsub.AutoExecutor('runs', cluster='local', timeout_min=5, array_parallelism=3)\nex",
    "def score(seed: int) -> float:\n    if seed == 4:\n        raise ValueError(f'seed {seed} diverged')\n"
    "    return seed / 10\n\n\njobs = ex.map_array(score, range(8))\njobsub.wait(jobs, progress=True)\njobs",
    "jobs[0].state, jobs[4].state",
    "jobs[4]",
    "jobs[4].result()",
    "jobsub.summary(jobs)",
]


def _missing() -> str | None:
    for module in ("nbconvert", "nbformat", "ipykernel"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install nbconvert ipykernel)"
    if shutil.which("chromium") is None:
        return "chromium is not installed (apt-get install chromium)"
    return None


@pytest.mark.skipif(_missing() is not None, reason=str(_missing()))
def test_a_notebook_shows_jobs_progress_errors_and_a_timeline(tmp_path: Path) -> None:
    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    path = tmp_path / "sweep.ipynb"
    nbformat.write(notebook, path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "--execute", "--allow-errors",
                    "--ExecutePreprocessor.timeout=300", str(path)], check=True, cwd=tmp_path, env=env,
                   capture_output=True, text=True, timeout=600)
    page = (tmp_path / "sweep.html").read_text()
    assert "<b>AutoExecutor</b>" in page and "timeout_min" in page  # the executor's own view
    assert "7 COMPLETED" in page and "1 FAILED" in page and "seed 4 diverged" in page  # the job list's table
    assert "(COMPLETED, FAILED)" in page  # states read as their names
    assert "dynamic-code" not in page and "raise ValueError(f'seed {seed} diverged')\nValueError" in page  # the cell's line
    assert page.count("remote traceback") == 1  # shown once
    assert "&lt;Figure size" not in page and page.count("data:image/png;base64") >= 1  # the timeline, drawn
    png = tmp_path / "sweep.png"
    subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--screenshot={png}", "--window-size=1200,2600",
                    f"file://{tmp_path / 'sweep.html'}"], check=True, capture_output=True, timeout=120)
    assert png.stat().st_size > 20_000
    evidence = os.environ.get("JOBSUB_EVIDENCE_DIR")
    if evidence:
        Path(evidence).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(evidence) / "notebook.png")
        shutil.copy(tmp_path / "sweep.html", Path(evidence) / "notebook.html")
