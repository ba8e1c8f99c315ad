"""``gcp_batch_debug=True``: the kit's attached run (``jobsub.cloud.attached``) with what a Batch task sees.

A Batch task reads its folder as the job's service account; a task run here reads it as the
submitter, with what the submitter's own SDK uses: Application Default Credentials.  Their
file (``GOOGLE_APPLICATION_CREDENTIALS``, else gcloud's
``application_default_credentials.json``) is bind-mounted read-only at ``ADC_IN_CONTAINER``
and ``GOOGLE_APPLICATION_CREDENTIALS`` names it there: the container sees a path, never a
credential value, and nothing of it reaches the folder.  The task also gets the project
(``GOOGLE_CLOUD_PROJECT``), the store's endpoint (``STORAGE_EMULATOR_HOST``: in
``launch.env`` already, from the store) and Batch's ``BATCH_TASK_INDEX``/``BATCH_TASK_COUNT``.
On a Compute Engine VM without such a file the task, on the host's network, asks the
metadata server as the submitter's SDK does.  Nothing is sent to Batch; ids are ``here-<tag>``.
"""

from __future__ import annotations

import logging
import os

from ...cloud.attached import run_submission_here
from ...folder import JobFolder
from ...parameters import CommonParameters
from ..base import Launch

__all__ = ["ADC_IN_CONTAINER", "ADC_VARIABLE", "adc_file", "run_here"]

logger = logging.getLogger("jobsub.gcp_batch")

ADC_VARIABLE = "GOOGLE_APPLICATION_CREDENTIALS"
ADC_IN_CONTAINER = "/var/run/jobsub/google-application-credentials.json"
"""Where the submitter's credentials file is, read-only, inside a task run here."""
PROJECT_VARIABLES = ("GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT")


def adc_file() -> str | None:
    """The Application Default Credentials file google-auth would read here, or None.

    ``GOOGLE_APPLICATION_CREDENTIALS`` first, then gcloud's file in its configuration
    directory (``CLOUDSDK_CONFIG``, default ``~/.config/gcloud``; ``%APPDATA%/gcloud`` on Windows).
    """
    named = os.environ.get(ADC_VARIABLE)
    if named:
        if os.path.isfile(named):
            return os.path.abspath(named)
        logger.warning("%s names %s, which is no file: the task run here gets no credentials file", ADC_VARIABLE, named)
        return None
    config = os.environ.get("CLOUDSDK_CONFIG")
    if not config:
        appdata = os.environ.get("APPDATA") if os.name == "nt" else None
        config = os.path.join(appdata, "gcloud") if appdata else os.path.expanduser("~/.config/gcloud")
    found = os.path.join(config, "application_default_credentials.json")
    return found if os.path.isfile(found) else None


def project_here(project: str) -> str:
    """The project a task run here names: the key's, else the submitter's environment's ("" if none)."""
    return project or next((os.environ[v] for v in PROJECT_VARIABLES if os.environ.get(v)), "")


def run_here(
    launch: Launch, argv: list[str], n_tasks: int, image: str, project: str, common: CommonParameters,
    folder: JobFolder,
) -> str:
    """Run the ``n_tasks`` tasks of ``launch`` in containers of ``image``, attached; return their id."""
    base = dict(launch.env)
    files: dict[str, str] = {}
    found = adc_file()
    if found is not None:
        files[found] = ADC_IN_CONTAINER
        base[ADC_VARIABLE] = ADC_IN_CONTAINER
    if project_here(project):
        base["GOOGLE_CLOUD_PROJECT"] = project_here(project)

    def env_of(child: int, job_id: str) -> dict[str, str]:
        return dict(base, BATCH_TASK_INDEX=str(child), BATCH_TASK_COUNT=str(n_tasks))

    return run_submission_here(launch, argv, image, n_tasks, common, folder, env_of, read_only_files=files)
