"""Serving: the model server, the local weighted router and the local process target.

Imports are lazy on purpose: ``python -m churn_platform.serving status`` must not pay
for MLflow, and the model server must set ``OMP_NUM_THREADS`` before numpy loads.
"""
