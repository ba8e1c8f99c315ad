"""Backends: one module each, imported only when used (``import jobsub`` stays cheap)."""

from .base import Backend, get_backend, known_backends, load_backend_class

__all__ = ["Backend", "get_backend", "known_backends", "load_backend_class"]
