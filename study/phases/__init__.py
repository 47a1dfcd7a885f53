"""A study's trials: search and evaluation in one Tune run (``_run``, ``_overlap``,
``_grouped``), the trial body (``_trial``), how many run at once (``_slots``), progress and the
closing of their MLflow runs."""
