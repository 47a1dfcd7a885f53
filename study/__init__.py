"""Orchestration: the launcher, Ray Tune, MLflow tracking, the cluster, scheduled re-studies.

Entry points (``python -m study.<name>``): ``launch``, ``data``, ``server``, ``schedule``,
``cluster``; ``study.run.run_study`` runs a whole study. The sub-systems have their own
packages: ``study.phases`` (search and evaluation in one Tune run, the trial, progress,
concurrency), ``study.tracking`` (the MLflow server, its store and PostgreSQL, the trial
logger and its journal, login), ``study.scheduling`` (re-studies, cron, the study lock) and
``study.cluster`` (the cluster launcher, attaching to a running Ray cluster).
"""
