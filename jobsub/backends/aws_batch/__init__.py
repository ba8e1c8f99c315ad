"""The AWS Batch backend: ``backend`` (the four primitives), ``render`` (requests), ``status``
(states and failure reasons), ``api`` (boto3 and error mapping), ``cloudwatch`` (logs)."""

from .api import map_boto_errors
from .backend import AWSBatchBackend
from .params import AWSBatchParameters

__all__ = ["AWSBatchBackend", "AWSBatchParameters", "map_boto_errors"]
