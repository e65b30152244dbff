"""Dagster resources: the only code that talks to outside systems (data, registry, cluster)."""
