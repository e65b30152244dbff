"""Serving: the model server and the local weighted router (``targets.local`` runs them).

Imports are lazy on purpose: ``python -m churn_platform.serving status`` must not pay
for MLflow, and the model server must set ``OMP_NUM_THREADS`` before numpy loads.
"""
