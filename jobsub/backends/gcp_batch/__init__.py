"""The GCP Batch backend (``cluster="gcp_batch"``): one Batch job per array, folders on ``gs://``."""

from .backend import GCPBatchBackend

__all__ = ["GCPBatchBackend"]
