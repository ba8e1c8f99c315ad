"""Docs check: every ```python block in README.md and docs/*.md compiles; relative links exist."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    problems = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", text, re.S)):
            try:
                compile(block, f"{page.name}[block {i}]", "exec")
            except SyntaxError as exc:
                problems.append(f"{page.name}: python block {i} does not compile: {exc}")
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            if not (page.parent / target).exists():
                problems.append(f"{page.name}: broken link {target}")
    print("\n".join(problems) or "docs: all code blocks compile, all links resolve")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
