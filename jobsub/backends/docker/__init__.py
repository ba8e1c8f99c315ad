"""The Docker backend: ``backend`` (client side), ``engine`` (shared with the dispatcher), ``dispatch``."""

from .backend import DockerBackend, DockerParameters
from .engine import map_docker_errors

__all__ = ["DockerBackend", "DockerParameters", "map_docker_errors"]
