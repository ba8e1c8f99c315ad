"""Stable hashes of Python calls: what a cache key is made of (``jobsub.cache``).

A key must be the same in every process and Python run of the same code, so
nothing here uses ``id()``, ``hash()`` of strings (randomized per process) or
reprs that hold addresses.  It must also be cheap: a typical call hashes in
tens of microseconds, because ``submit`` pays for it.

What the code of a function contributes (``function_digest``):

- its bytecode, constants (nested functions and lambdas included), names,
  defaults and keyword defaults; not line numbers (moving a function in its
  file keeps its key);
- the values of its closure cells;
- what it calls or reads in its own module, recursively: functions and classes
  by their code; other modules' functions and classes by their qualified name;
- every other global it reads by value, recursively (``CONFIG = {"scale": 2}``
  changed to 3 is a new key), whatever module it comes from.  A global whose
  value cannot be hashed (a lock, a client, an open file) is an error naming
  it; a module lists the globals the key leaves out in
  ``__jobsub_cache_ignore__`` (a set of names), the explicit opt-out.

So changing the function, a helper of the same module, a default or a module
value it reads invalidates its entries; a new version of an installed
library does not (pass its version as an argument, or ``jobsub clean --cache``).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import logging
import os
import time
import types
import warnings
from collections.abc import Callable
from typing import Any

from .errors import PicklingError

__all__ = ["SLOW_PICKLE_S", "function_digest", "value_digest"]

logger = logging.getLogger("jobsub.cache")

SLOW_PICKLE_S = 0.05
"""An argument hashed through its pickle that takes longer than this is reported, once per type."""

_SIMPLE = (type(None), bool, int, float, complex, str, bytes)
_warned_types: set[str] = set()
_code_cache: dict[types.CodeType, tuple[bytes, frozenset[str]]] = {}


def _code_parts(code: types.CodeType) -> tuple[bytes, frozenset[str]]:
    """A code object's digest (without positions) and every global name it and its nested code use.

    Cached per code object: code does not change once compiled.
    """
    cached = _code_cache.get(code)
    if cached is not None:
        return cached
    h = hashlib.blake2b(digest_size=16)
    h.update(code.co_code)
    names = set(code.co_names)
    for name in (*code.co_names, "|", *code.co_varnames, "|", *code.co_freevars, "|", *code.co_cellvars):
        h.update(name.encode() + b"\0")
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            digest, inner = _code_parts(const)
            h.update(b"code" + digest)
            names |= inner
        else:
            _feed(h, const, set())
    result = (h.digest(), frozenset(names))
    if len(_code_cache) < 100_000:
        _code_cache[code] = result
    return result


def function_digest(fn: Any) -> str:
    """A stable hex digest of what ``fn`` computes: its code, closure, defaults and same-module callees."""
    h = hashlib.blake2b(digest_size=16)
    _feed_callable(h, fn, set())
    return h.hexdigest()


def value_digest(value: Any, job_key: Callable[[Any], str | None] | None = None) -> str:
    """A stable hex digest of a value (an argument).

    ``job_key(obj)`` names objects that stand for other jobs (a ``Job``): their
    own cache key, or their identity.  Values of unknown types are hashed by
    their pickle, with a warning when that is slow.
    """
    h = hashlib.blake2b(digest_size=16)
    _feed(h, value, set(), job_key)
    return h.hexdigest()


def _tag(h: Any, tag: str) -> None:
    h.update(tag.encode() + b"\0")


def _feed(h: Any, obj: Any, seen: set[int], job_key: Callable[[Any], str | None] | None = None) -> None:
    """Add ``obj`` to ``h``, type-tagged, so that ``1``, ``"1"`` and ``[1]`` differ."""
    kind = type(obj)
    if kind is str:
        _tag(h, "str")
        h.update(obj.encode("utf-8", "surrogatepass"))
        return
    if kind in _SIMPLE:
        _tag(h, kind.__name__)
        h.update(obj if kind is bytes else repr(obj).encode())
        return
    if job_key is not None:
        key = job_key(obj)
        if key is not None:
            _tag(h, "job")
            h.update(key.encode())
            return
    if id(obj) in seen:  # a cycle: its place is enough
        _tag(h, "cycle")
        return
    if kind in (list, tuple, set, frozenset, dict):
        seen.add(id(obj))
        _tag(h, f"{kind.__name__}{len(obj)}")
        if kind in (list, tuple):
            for item in obj:
                _feed(h, item, seen, job_key)
        elif kind is dict:
            # equal dicts hash alike whatever their insertion order
            if all(type(k) is str for k in obj):
                items = sorted(obj.items())
            else:
                items = sorted(obj.items(), key=lambda kv: value_digest(kv[0]))
            for key, value in items:
                _feed(h, key, seen, job_key)
                _feed(h, value, seen, job_key)
        else:
            for digest in sorted(value_digest(item, job_key) for item in obj):
                h.update(digest.encode())
        seen.discard(id(obj))
        return
    if isinstance(obj, (bytearray, memoryview)):
        _tag(h, "bytes")
        h.update(bytes(obj))
        return
    if isinstance(obj, os.PathLike):
        _tag(h, "path")
        h.update(os.fspath(obj).encode() if isinstance(os.fspath(obj), str) else bytes(os.fspath(obj)))
        return
    if isinstance(obj, enum.Enum):
        _tag(h, f"enum:{kind.__module__}.{kind.__qualname__}")
        _feed(h, obj.value, seen, job_key)
        return
    if isinstance(obj, (type, types.FunctionType, types.MethodType, functools.partial, types.BuiltinFunctionType)):
        _tag(h, "callable")
        _feed_callable(h, obj, set())
        return
    if dataclasses.is_dataclass(obj):
        seen.add(id(obj))
        _tag(h, f"dataclass:{kind.__module__}.{kind.__qualname__}")
        for field in dataclasses.fields(obj):
            _tag(h, field.name)
            _feed(h, getattr(obj, field.name), seen, job_key)
        seen.discard(id(obj))
        return
    if kind.__module__ == "numpy" and hasattr(obj, "tobytes") and hasattr(obj, "dtype"):
        _tag(h, f"numpy:{obj.dtype.str}:{getattr(obj, 'shape', ())}")
        h.update(obj.tobytes())
        return
    _feed_pickle(h, obj)


def _feed_pickle(h: Any, obj: Any) -> None:
    """The fallback: the object's pickle (deterministic for the same state), timed."""
    import cloudpickle

    started = time.perf_counter()
    data = cloudpickle.dumps(obj)
    elapsed = time.perf_counter() - started
    kind = type(obj)
    name = f"{kind.__module__}.{kind.__qualname__}"
    _tag(h, f"pickle:{name}")
    h.update(data)
    if elapsed > SLOW_PICKLE_S and name not in _warned_types:
        _warned_types.add(name)
        warnings.warn(
            f"hashing a {name} for the cache took {elapsed * 1000:.0f} ms through its pickle "
            f"({len(data) / 1e6:.1f} MB): pass a path or an identifier instead of the data itself, "
            "or submit without cache=True",
            RuntimeWarning, stacklevel=5,
        )


def _feed_callable(h: Any, fn: Any, seen: set[int]) -> None:
    if id(fn) in seen:
        _tag(h, "recursion")
        return
    seen.add(id(fn))
    if isinstance(fn, functools.partial):
        _tag(h, "partial")
        _feed_callable(h, fn.func, seen)
        _feed(h, fn.args, set())
        _feed(h, fn.keywords, set())
        return
    if isinstance(fn, types.MethodType):
        _tag(h, "method")
        _feed_callable(h, fn.__func__, seen)
        _feed(h, fn.__self__, set())
        return
    if isinstance(fn, types.FunctionType):
        _feed_function(h, fn, seen)
        return
    if isinstance(fn, type):
        _feed_class(h, fn, seen, fn.__module__)
        return
    if isinstance(fn, types.BuiltinFunctionType) or not callable(fn):
        _tag(h, f"builtin:{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(type(fn)))}")
        return
    # a callable instance: what its class computes, and its state
    _tag(h, "instance")
    _feed_class(h, type(fn), seen, type(fn).__module__)
    _feed(h, getattr(fn, "__dict__", None), set())


def _feed_function(h: Any, fn: types.FunctionType, seen: set[int]) -> None:
    _tag(h, f"fn:{fn.__module__}.{fn.__qualname__}")
    digest, names = _code_parts(fn.__code__)
    h.update(digest)
    _feed(h, fn.__defaults__, set())
    _feed(h, fn.__kwdefaults__, set())
    for cell in fn.__closure__ or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            _tag(h, "empty-cell")
            continue
        if callable(value) and isinstance(value, (types.FunctionType, type)):
            _feed_callable(h, value, seen)
        else:
            _feed(h, value, set())
    module_globals = fn.__globals__
    ignored = module_globals.get("__jobsub_cache_ignore__") or ()
    for name in sorted(names):
        if name not in module_globals:
            continue  # a builtin, or an attribute name
        if name in ignored:
            _tag(h, f"ignored:{name}")
            continue
        _feed_global(h, name, module_globals[name], fn, seen)


def _feed_global(h: Any, name: str, value: Any, fn: types.FunctionType, seen: set[int]) -> None:
    """A global the function reads: same-module code by content, other code by name, every value by value."""
    _tag(h, f"global:{name}")
    if isinstance(value, types.ModuleType):
        _tag(h, f"module:{value.__name__}")
    elif isinstance(value, (types.FunctionType, type)):
        if getattr(value, "__module__", None) == fn.__module__:
            _feed_callable(h, value, seen)
        else:
            _tag(h, f"ref:{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', '')}")
    else:
        try:
            _feed(h, value, set())
        except Exception as exc:
            raise PicklingError(
                f"cannot hash the global {name!r} ({type(value).__module__}.{type(value).__qualname__}) that "
                f"{fn.__module__}.{fn.__qualname__} reads, for its cache key: {type(exc).__name__}: {exc}. "
                f"Pass it as an argument, or leave it out of the key with __jobsub_cache_ignore__ = {{{name!r}}} "
                f"in module {fn.__module__} (only for what does not change results: a client, a lock)"
            ) from exc


def _feed_class(h: Any, cls: type, seen: set[int], module: str) -> None:
    """A class by its own methods and class attributes (those defined in its body), and its bases'."""
    _tag(h, f"class:{cls.__module__}.{cls.__qualname__}")
    if cls.__module__ != module or cls.__module__ == "builtins":
        return
    for base in cls.__mro__[1:]:
        if base is not object and base.__module__ == module:
            _feed_class(h, base, seen, module)
        elif base is not object:
            _tag(h, f"base:{base.__module__}.{base.__qualname__}")
    for attr, value in sorted(vars(cls).items()):
        if attr.startswith("__") and attr not in ("__call__", "__init__", "__post_init__"):
            continue
        raw = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
        if isinstance(raw, property):
            raw = raw.fget
        if isinstance(raw, types.FunctionType):
            _tag(h, attr)
            _feed_callable(h, raw, seen)
        elif type(raw) in _SIMPLE:
            _tag(h, attr)
            _feed(h, raw, set())
