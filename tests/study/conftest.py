"""The study fixtures (MLflow server, Ray) live in ``tests/conftest.py``."""
