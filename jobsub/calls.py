"""What a task runs and what it sends back: pickling, written once for every backend.

``DelayedSubmission`` is a call ``function(*args, **kwargs)`` waiting to run
(submitit's name and attributes, so checkpoint methods written for submitit
keep working).  ``dumps_checked`` pickles with an error that names the
offending object, so a bad argument fails in ``submit`` and not an hour later
on a cluster.  ``Outcome`` is the record a worker writes for each task.
"""

from __future__ import annotations

import os
import pickle
import sys
from types import ModuleType

from .errors import CorruptResultError, PicklingError, UnreadableResultError

TYPE_CHECKING = False  # as typing.TYPE_CHECKING: the worker imports this module, and spares typing and pathlib
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Callable

__all__ = ["DelayedSubmission", "JobRef", "Outcome", "RemoteTraceback", "dumps_checked"]

_PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__)) + "/"


def _cloudpickle() -> ModuleType:
    """cloudpickle, imported on first use.

    A worker whose call needs no by-value pickling never loads it: its
    imports cost every task container ~15 ms.
    """
    import importlib

    return importlib.import_module("cloudpickle")


def _dumps_outcome(obj: Any) -> bytes:
    """Pickle with cloudpickle if it is loaded, else try the stdlib pickler first.

    cloudpickle is loaded as soon as the call held anything pickled by value
    (a function from ``__main__``, a lambda), and then it is used as always.
    Otherwise the result can only hold importable objects, which cloudpickle
    pickles by reference too, so the stdlib pickler gives the same result
    without the import; whatever it cannot pickle goes to cloudpickle.
    """
    module = sys.modules.get("cloudpickle")
    if module is None:
        try:
            return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            module = _cloudpickle()
    return module.dumps(obj)  # type: ignore[no-any-return]


class DelayedSubmission:
    """A call to make later: ``function(*args, **kwargs)``."""

    def __init__(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.function = function
        self.args = args
        self.kwargs = kwargs
        self._result: Any = None
        self._done = False
        self._timeout_min: float = 0
        self._timeout_countdown: int = 0

    def result(self) -> Any:
        """Run the call once and remember its value (used by ``FunctionSequence``)."""
        if not self._done:
            self._result = self.function(*self.args, **self.kwargs)
            self._done = True
        return self._result

    def done(self) -> bool:
        return self._done

    def set_timeout(self, timeout_min: float, max_num_timeout: int) -> None:
        self._timeout_min = timeout_min
        self._timeout_countdown = max_num_timeout

    def dump(self, filepath: str | Path) -> None:
        with open(filepath, "wb") as f:
            f.write(dumps_checked(self, "the submission"))

    @classmethod
    def load(cls, filepath: str | Path) -> DelayedSubmission:
        with open(filepath, "rb") as f:
            obj = pickle.load(f)
        if type(obj).__name__ != cls.__name__:
            raise TypeError(f"{filepath} holds a {type(obj).__name__}, not a {cls.__name__}")
        return obj  # type: ignore[no-any-return]

    def _checkpoint_function(self) -> DelayedSubmission | None:
        checkpoint = getattr(self.function, "__submitit_checkpoint__", None) or getattr(
            self.function, "checkpoint", None
        )
        if checkpoint is None:
            return None
        result: DelayedSubmission | None = checkpoint(*self.args, **self.kwargs)
        return result

    def __repr__(self) -> str:
        name = getattr(self.function, "__qualname__", repr(self.function))
        return f"DelayedSubmission({name}, {len(self.args)} args, {len(self.kwargs)} kwargs)"


class JobRef:
    """A job passed as an argument to another: where its result is, not how to ask its scheduler.

    The executor puts these in place of ``Job`` arguments (also inside lists,
    tuples and dicts); the worker replaces them by the upstream's value, read
    from its folder through the storage, so a task needs no scheduler access.
    """

    __slots__ = ("backend", "folder", "index", "job_id", "ranks")
    ranks: tuple[int, ...]
    """The ranks whose results the argument stands for (several: a list of values, as ``results()``)."""
    unpickled = False
    """Set once a JobRef is unpickled in this process: a task without one skips the walk over its arguments."""

    def __init__(self, folder: str, index: int, ranks: tuple[int, ...], job_id: str, backend: str) -> None:
        self.folder, self.index, self.ranks, self.job_id, self.backend = folder, index, tuple(ranks), job_id, backend

    def __reduce__(self) -> tuple[Any, ...]:
        return (_job_ref, (self.folder, self.index, self.ranks, self.job_id, self.backend))

    def __repr__(self) -> str:
        return f"JobRef({self.job_id} of {self.backend}, task {self.index} in {self.folder})"


def _job_ref(folder: str, index: int, ranks: tuple[int, ...], job_id: str, backend: str) -> JobRef:
    JobRef.unpickled = True
    return JobRef(folder, index, ranks, job_id, backend)


def _short_repr(obj: Any, limit: int = 80) -> str:
    try:
        text = repr(obj)
    except Exception:  # a broken __repr__ must not hide the pickling error
        text = f"<{type(obj).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_culprit(call: DelayedSubmission) -> str | None:
    """Which part of a call cannot be pickled, in words a user recognises."""
    name = getattr(call.function, "__qualname__", _short_repr(call.function))
    parts: list[tuple[str, Any]] = [(f"the function {name}", call.function)]
    parts += [(f"argument #{i} of {name} ({_short_repr(a)})", a) for i, a in enumerate(call.args)]
    parts += [(f"keyword argument {k!r} of {name} ({_short_repr(v)})", v) for k, v in call.kwargs.items()]
    for description, obj in parts:
        try:
            _cloudpickle().dumps(obj)
        except Exception:
            return description
    return None


def dumps_checked(obj: Any, what: str, *, call: DelayedSubmission | None = None, item: int | None = None) -> bytes:
    """Cloudpickle ``obj``; raise ``PicklingError`` naming the part of ``call`` (item ``item`` of an array) that fails."""
    try:
        return _cloudpickle().dumps(obj)  # type: ignore[no-any-return]
    except Exception as exc:
        culprit = (_describe_culprit(call) if call is not None else None) or what
        if item is not None:
            culprit += f" in item {item} of the array"
        raise PicklingError(
            f"cannot pickle {culprit}: {type(exc).__name__}: {exc}. "
            "Everything a job needs is pickled with cloudpickle when it is submitted; "
            "pass a path or a plain value instead of open files, locks, sockets or clients."
        ) from exc


class RemoteTraceback(Exception):
    """Carries the traceback text of an exception raised inside a job."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n\"\"\"\n{self.text}\"\"\""


class Outcome:
    """How one task ended, as the worker writes it into ``result/<i>.<r>.pkl``.

    A plain class rather than a dataclass: ``dataclasses`` (with ``inspect``)
    would add ~5 ms of imports to every task's start.
    """

    def __init__(
        self,
        ok: bool,
        value: Any = None,
        exception: BaseException | None = None,
        exc_type: str = "",
        message: str = "",
        traceback: str = "",
        usage: dict[str, Any] | None = None,
    ) -> None:
        self.ok = ok
        self.value = value
        self.exception = exception
        self.exc_type = exc_type
        self.message = message
        self.traceback = traceback
        self.usage: dict[str, Any] = usage if usage is not None else {}

    def __repr__(self) -> str:
        if self.ok:
            return f"Outcome(ok=True, value={_short_repr(self.value)})"
        return f"Outcome(ok=False, exc_type={self.exc_type!r}, message={_short_repr(self.message)})"

    @classmethod
    def from_exception(cls, exc: BaseException, usage: dict[str, Any]) -> Outcome:
        import traceback  # only failing tasks pay for it

        # start the traceback at the user's code: jobsub's own frames only add noise
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            tb = tb.tb_next
        if tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            tb = exc.__traceback__  # the error is in jobsub itself: keep everything
        text = "".join(traceback.format_exception(type(exc), exc, tb))
        return cls(
            ok=False,
            exception=exc,
            exc_type=f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins."),
            message=str(exc),
            traceback=text,
            usage=usage,
        )

    def dumps(self) -> bytes:
        """Pickle the outcome; an unpicklable value or exception becomes an error saying so.

        The exception travels as ``_PortableException``: rebuilt on the client
        without calling its ``__init__``, so a class whose constructor needs
        arguments (defined in ``__main__`` and pickled by value, where no
        unpickler hook can reach it) arrives typed and whole.
        """
        exception = self.exception
        if exception is not None and type(exception).__reduce__ is BaseException.__reduce__:
            self.exception = _PortableException(exception)  # type: ignore[assignment]
        try:
            return _dumps_outcome(self)
        except Exception as exc:
            if self.ok:
                fallback = Outcome.from_exception(exc, self.usage)
                fallback.exception = None
                fallback.exc_type = "PicklingError"
                fallback.message = (
                    f"the job's return value ({type(self.value).__name__}) could not be pickled: "
                    f"{type(exc).__name__}: {exc}"
                )
                fallback.traceback = fallback.message + "\n" + fallback.traceback
                return fallback.dumps()
            # keep the text of an exception that cannot be pickled; drop the object
            self.exception = None
            self.message += f" (the exception object could not be pickled: {exc})"
            return _dumps_outcome(self)
        finally:
            if self.exception is not None:
                self.exception = exception

    @staticmethod
    def loads(data: bytes, where: str = "the result file") -> Outcome:
        """Unpickle an outcome.

        A remote exception whose class is missing here, or cannot be rebuilt
        (an ``__init__`` with required arguments), falls back to its text; a
        *value* that cannot be unpickled is an error naming what is missing,
        never a placeholder that would pass for a result.
        """
        try:
            outcome = pickle.loads(data)
        except Exception as exc:
            outcome = _loads_tolerantly(data, exc)
        if not isinstance(outcome, Outcome):
            raise CorruptResultError(
                f"{where} holds a {type(outcome).__name__}, not a jobsub result record", final=True
            )
        return outcome


class _PortableException:
    """Pickles an exception as "this class, these args, this state", without calling its ``__init__``.

    ``BaseException.__reduce__`` rebuilds with ``cls(*args)``, which fails
    for a constructor whose parameters differ from the ``args`` it passes to
    ``Exception`` (``QuotaExceeded(code, detail)`` with ``args == (message,)``).
    """

    __slots__ = ("exception",)

    def __init__(self, exception: BaseException) -> None:
        self.exception = exception

    def __reduce__(self) -> tuple[Any, ...]:
        exc = self.exception
        return (_rebuild_exception, (type(exc), exc.args, getattr(exc, "__dict__", None) or None))


def _rebuild_exception(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any] | None) -> BaseException:
    if not isinstance(cls, type):  # the tolerant unpickler's stand-in (``_exception_factory``)
        return cls(*args)  # type: ignore[unreachable]
    try:
        exc = cls.__new__(cls, *args)
    except TypeError:  # a __new__ of its own, with other parameters
        exc = cls.__new__(cls)
    exc.args = args
    if state:
        exc.__dict__.update(state)
    return exc


class _TolerantUnpickler(pickle.Unpickler):
    """Unpickles an Outcome whose exception cannot be rebuilt on this side.

    Classes that cannot be imported become ``_Placeholder`` (the outcome keeps
    the exception's type name, message and traceback as text); exception
    classes whose constructor refuses their own ``args`` are rebuilt without
    calling it.  What was replaced is remembered, so that a return value
    needing it is reported rather than handed back damaged.
    """

    def __init__(self, data: bytes) -> None:
        import io

        super().__init__(io.BytesIO(data))
        self.missing: list[str] = []

    def find_class(self, module: str, name: str) -> Any:
        try:
            cls = super().find_class(module, name)
        except (ImportError, AttributeError) as exc:
            self.missing.append(f"{module}.{name} ({exc})")
            return _Placeholder
        if isinstance(cls, type) and issubclass(cls, BaseException):
            return _exception_factory(cls)
        return cls


def _exception_factory(cls: type[BaseException]) -> Any:
    def rebuild(*args: Any) -> BaseException:
        try:
            return cls(*args)
        except Exception:  # e.g. __init__(self, code, detail) pickled with args == (message,)
            exc = cls.__new__(cls)
            exc.args = args
            return exc

    return rebuild


class _Placeholder(Exception):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args)

    def __setstate__(self, state: Any) -> None:
        pass


def _loads_tolerantly(data: bytes, original: Exception) -> Outcome:
    unpickler = _TolerantUnpickler(data)
    try:
        outcome = unpickler.load()
    except Exception:
        raise original from None
    if not isinstance(outcome, Outcome):
        return outcome  # type: ignore[no-any-return]
    if outcome.ok:
        raise UnreadableResultError(
            f"the job's return value cannot be unpickled here: {original}. It needs "
            f"{', '.join(unpickler.missing) or 'something this process lacks'}; install in this "
            "environment what the job's environment had (or return plain values)"
        ) from original
    if isinstance(outcome.exception, _Placeholder):
        outcome.exception = None
    return outcome
