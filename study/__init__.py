"""Orchestration: launcher, Ray Tune, MLflow tracking, cluster, scheduled re-studies."""
