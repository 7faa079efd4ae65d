"""Prefect tasks of prefect-scenario: upload, estimate, submit, wait, download.

Each phase has the retry and cache behaviour that is safe for it:

=================  =====================================  ===============================================
task               retries                                cache / persistence
=================  =====================================  ===============================================
upload_video,      2, transient errors only               content sha256 + kind + scope, 7 days
upload_image
estimate_job       2, transient errors only               none (a dry run is free)
submit_job         none (paid; reconciled in the client)  model + body + scope (+ flow run), 30 days
wait_for_job       2, transient errors only               none
download_outputs   3, backoff, never regenerates          outputs + destination, 7 days; local: only
                                                          while the files exist
=================  =====================================  ===============================================
"""

from prefect_scenario.job_labels import JOB_ID_LABEL, JOB_IDS_LABEL, MODEL_ID_LABEL, job_ids_from_labels
from prefect_scenario.tasks.download import download_outputs
from prefect_scenario.tasks.submit import estimate_job, submit_job
from prefect_scenario.tasks.upload import upload_image, upload_video
from prefect_scenario.tasks.wait import JobOutcome, outcome_for, progress_artifact_key, wait_for_job

__all__ = [
    "JOB_IDS_LABEL",
    "JOB_ID_LABEL",
    "MODEL_ID_LABEL",
    "JobOutcome",
    "download_outputs",
    "estimate_job",
    "job_ids_from_labels",
    "outcome_for",
    "progress_artifact_key",
    "submit_job",
    "upload_image",
    "upload_video",
    "wait_for_job",
]
