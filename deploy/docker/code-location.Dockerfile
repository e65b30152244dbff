# syntax=docker/dockerfile:1
# The Dagster code location (gRPC server) and the image of every run pod the
# K8sRunLauncher starts: the churn_platform asset graph with CHURN_ENV=kubernetes.
# Build from the repository root:
#   docker build -f deploy/docker/code-location.Dockerfile -t churn-code-location:0.1.0 .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_NUM_THREADS=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    CHURN_ENV=kubernetes \
    CHURN_HOME=/tmp/churn

WORKDIR /opt/churn
COPY constraints.txt pyproject.toml README.md ./
COPY churn_platform ./churn_platform
# dagster-postgres: run pods load the instance (Postgres run/event storage) the Helm
# chart mounts as dagster.yaml; the version moves with dagster (pinned in constraints).
RUN pip install --constraint constraints.txt . dagster-postgres \
    && mkdir -p "$DAGSTER_HOME" \
    && groupadd --gid 10001 churn \
    && useradd --uid 10001 --gid churn --no-create-home --home-dir /tmp churn \
    && chown 10001:10001 "$DAGSTER_HOME"

USER 10001:10001
EXPOSE 3030
# The Helm chart passes its own `dagster api grpc` arguments; this default lets the image
# run alone for a quick check.
CMD ["dagster", "api", "grpc", "--module-name", "churn_platform.definitions", "--host", "0.0.0.0", "--port", "3030"]
