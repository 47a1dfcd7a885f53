"""Scheduled re-studies: what changed, the cron entries, the study lock and the re-run."""
