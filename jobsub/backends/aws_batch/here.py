"""``aws_batch_debug=True``: the kit's attached run (``jobsub.cloud.attached``) with what a Batch job sees.

The containers get this machine's AWS credentials (boto3's chain, as the client uses) and the
AWS_BATCH_* variables; nothing is sent to AWS Batch. Ids are ``here-<submission tag>``.
"""

from __future__ import annotations

from ...cloud.attached import run_submission_here
from ...cloud.aws import machine_credentials
from ...folder import JobFolder
from ...parameters import CommonParameters
from ..base import Launch

__all__ = ["run_here"]


def run_here(
    launch: Launch, argv: list[str], n_tasks: int, image: str, common: CommonParameters, folder: JobFolder
) -> str:
    """Run the ``n_tasks`` tasks of ``launch`` in containers of ``image``, attached; return their id."""
    base = {**machine_credentials(), **launch.env, "AWS_BATCH_JOB_ATTEMPT": "1"}

    def env_of(child: int, job_id: str) -> dict[str, str]:
        if n_tasks == 1:
            return dict(base, AWS_BATCH_JOB_ID=job_id)
        return dict(base, AWS_BATCH_JOB_ID=f"{job_id}:{child}", AWS_BATCH_JOB_ARRAY_INDEX=str(child))

    return run_submission_here(launch, argv, image, n_tasks, common, folder, env_of)
