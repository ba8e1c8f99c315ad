"""The AWS Batch backend: ``backend`` (the four primitives), ``render`` (requests), ``status``
(states and failure reasons), ``scheduler`` (its answers to the array tracker),
``cloudwatch`` (logs); boto3 is reached through jobsub.cloud.aws."""

from .backend import AWSBatchBackend
from .params import AWSBatchParameters

__all__ = ["AWSBatchBackend", "AWSBatchParameters"]
