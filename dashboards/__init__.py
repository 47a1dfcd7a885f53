"""Dashboards: the paper's tables, ROC curves and statistics rebuilt from MLflow (issue 6)."""
