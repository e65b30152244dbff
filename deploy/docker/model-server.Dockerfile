# syntax=docker/dockerfile:1
# The model server: one container per model version, started by the Kubernetes target as
#   python -m churn_platform.serving model-server --model-uri models:/churn_model/<v> --version <v> ...
# It loads the model from MLflow at start-up (MLFLOW_TRACKING_URI), so one image serves
# every version. Build from the repository root:
#   docker build -f deploy/docker/model-server.Dockerfile -t churn-model-server:0.1.0 .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_NUM_THREADS=1 \
    HOME=/tmp

WORKDIR /opt/churn
# Dependencies first (cached layer), pinned by the project's constraints file.
COPY constraints.txt pyproject.toml README.md ./
COPY churn_platform ./churn_platform
RUN pip install --constraint constraints.txt . \
    && groupadd --gid 10001 churn \
    && useradd --uid 10001 --gid churn --no-create-home --home-dir /tmp churn

# Matches the pod's securityContext (runAsUser 10001, read-only root; /tmp is an emptyDir).
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["python", "-m", "churn_platform.serving", "model-server"]
CMD ["--help"]
