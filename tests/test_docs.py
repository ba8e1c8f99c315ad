"""The docs checks themselves (scripts/check_docs.py, scripts/parameter_docs.py): they can fail."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import check_docs  # noqa: E402
import parameter_docs  # noqa: E402


def test_a_failing_block_is_reported_and_a_reason_is_required(tmp_path: Path) -> None:
    page = ROOT / "docs" / "example.md"  # a name under the root: only its text is read
    text = "```python\nx = 1\n```\n\n```python\nassert x == 2, 'the docs lie'\n```\n"
    problems, skipped = check_docs.run_page(page, text)
    assert len(problems) == 1 and "the docs lie" in problems[0] and skipped == []
    problems, skipped = check_docs.run_page(page, "<!-- docs: not run () -->\n```python\nx = 1\n```\n")
    assert problems == ["docs/example.md[block 0]: 'not run' needs a reason"]


def test_setup_blocks_prepare_the_fragments() -> None:
    text = "<!-- docs-setup\ntrain = abs\n-->\n```python\nassert train(-2) == 2\n```\n"
    assert check_docs.run_page(ROOT / "docs" / "example.md", text) == ([], [])


def test_every_key_of_every_backend_is_documented_and_the_tables_are_current() -> None:
    assert parameter_docs.undocumented() == []
    assert parameter_docs.main(["--check"]) == 0
    page = (ROOT / "docs" / "backends" / "slurm.md").read_text()
    assert "| `slurm_partition` |" in page and "sbatch `--partition`" in page
    for name in ("local", "docker", "aws_batch"):
        cls = parameter_docs.parameters_class(name)
        assert cls is not None
        text = (ROOT / "docs" / "backends" / f"{name}.md").read_text()
        assert all(f"`{name}_{key}`" in text for key in cls.__dataclass_fields__)
