"""Remote tracebacks with the user's source lines where this process has them.

Code defined in ``__main__`` (a script, a notebook cell) travels to the task
by value, and cloudpickle names its file ``<dynamic-code>``: the remote
traceback then shows ``File "<dynamic-code>", line 8, in compute`` and no
source.  Line numbers and names survive, so the client, which defined that
code, can say which file and which line they were: it looks for a function of
that name covering that line among the code reachable from ``__main__``
(nested functions and lambdas included) and reads the line through
``linecache``, which also knows IPython's cells.
"""

from __future__ import annotations

import linecache
import re
import sys
import types
from collections.abc import Iterator

__all__ = ["with_source"]

_DYNAMIC = re.compile(r'^(?P<indent>\s*)File "<dynamic-code>", line (?P<line>\d+), in (?P<name>.+)$')


def with_source(text: str) -> str:
    """``text`` (a formatted traceback) with each ``<dynamic-code>`` frame named and its source line shown."""
    if "<dynamic-code>" not in text:
        return text
    index: dict[str, list[types.CodeType]] | None = None
    out: list[str] = []
    for line in text.splitlines():
        match = _DYNAMIC.match(line)
        if match is None:
            out.append(line)
            continue
        if index is None:
            index = _main_code()
        number, name, indent = int(match["line"]), match["name"], match["indent"]
        code = next((c for c in index.get(name, []) if _covers(c, number)), None)
        source = linecache.getline(code.co_filename, number).strip() if code is not None else ""
        if code is None:
            out.append(line)
            continue
        out.append(f'{indent}File "{code.co_filename}", line {number}, in {name}')
        if source:
            out.append(f"{indent}  {source}")
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def _covers(code: types.CodeType, line: int) -> bool:
    lines = [n for _, _, n in code.co_lines() if n is not None]
    return bool(lines) and min([*lines, code.co_firstlineno]) <= line <= max(lines)


def _main_code() -> dict[str, list[types.CodeType]]:
    """Every code object reachable from ``__main__``'s functions and classes, by name."""
    main = sys.modules.get("__main__")
    found: dict[str, list[types.CodeType]] = {}
    if main is None:
        return found
    seen: set[int] = set()
    for code in _codes(vars(main).values(), seen):
        found.setdefault(code.co_name, []).append(code)
    return found


def _codes(values: object, seen: set[int]) -> Iterator[types.CodeType]:
    stack = list(values)  # type: ignore[call-overload]
    while stack:
        value = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, (staticmethod, classmethod)):
            stack.append(value.__func__)
        elif isinstance(value, property):
            stack += [f for f in (value.fget, value.fset, value.fdel) if f is not None]
        elif isinstance(value, types.FunctionType):
            stack.append(value.__code__)
        elif isinstance(value, type) and value.__module__ == "__main__":
            stack += list(vars(value).values())
        elif isinstance(value, types.CodeType):
            yield value
            stack += [c for c in value.co_consts if isinstance(c, types.CodeType)]
