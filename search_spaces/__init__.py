"""Declarative study definitions (YAML) and their validation."""
