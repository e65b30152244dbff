"""Dagster-facing code only: thin assets, checks, schedules and sensors over ``core``."""
