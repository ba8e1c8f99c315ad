"""The local backend: jobs as forked children of a warm, detached fork server (``server``)."""

from .backend import LocalBackend, LocalParameters

__all__ = ["LocalBackend", "LocalParameters"]
