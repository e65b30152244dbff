"""The model server starts the way its pod starts it.

The container of the generated Deployment (``targets.kubernetes.objects.deployment``) is run
under ``bwrap`` the way the kubelet would run it: its command, args and env as built
(only the port swapped for a free one, as the sandbox shares the host's network), a
read-only root with a fresh tmpfs ``/tmp`` (the pod's emptyDir), uid/gid 10001, the
image's working directory read-only, and no environment beyond the container's own
plus what the image sets (PATH, PYTHONPATH). The MLflow store is bound read-only at its
path, and ``MLFLOW_TRACKING_URI`` points at it. Anything the server tries to write
outside ``/tmp`` is ``OSError: Read-only file system`` here, as in the cluster.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from churn_platform.targets.kubernetes import objects as k8s
from churn_platform.testing import RegisteredModels, free_port, to_records

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
SANDBOX = [
    "--ro-bind", "/", "/",
    "--tmpfs", "/tmp",
    "--dev", "/dev",
    "--proc", "/proc",
    "--unshare-user", "--uid", "10001", "--gid", "10001",
    "--die-with-parent",
]  # fmt: skip


def _image_paths() -> list[str]:
    """The code and the interpreter the image would hold: the repository and the Python
    prefixes, outermost first (bwrap mounts them in order)."""
    paths = {str(REPO), sys.prefix, sys.base_prefix, str(Path(sys.executable).resolve().parent)}
    return sorted(paths, key=len)


def _bwrap_reason() -> str | None:
    """Why bwrap cannot run here (None when it can)."""
    if shutil.which("bwrap") is None:
        return "bwrap not installed (Debian package bubblewrap; .ci/run installs it)"
    done = subprocess.run(["bwrap", *SANDBOX, "true"], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return f"bwrap cannot create a sandbox here (user namespaces?): {done.stderr.strip()}"
    return None


def _container(models: RegisteredModels, version: str) -> dict:
    dep = k8s.deployment(
        name=k8s.object_name(version),
        namespace="churn-production",
        environment="production",
        version=version,
        model_uri=models.model_uris[version],
        spec=k8s.ServingSpec(image="churn-model-server:test", tracking_uri="http://mlflow:5000"),
    )
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return container


def test_the_server_starts_as_its_pod_starts_it(
    registered_models: RegisteredModels, tmp_path: Path
) -> None:
    reason = _bwrap_reason()
    if reason:
        pytest.skip(reason)
    models = registered_models
    container = _container(models, "1")
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True

    port = free_port()
    args = list(container["args"])
    args[args.index("--port") + 1] = str(port)
    env = {e["name"]: e["value"] for e in container["env"]}
    env["MLFLOW_TRACKING_URI"] = models.tracking_uri  # the cluster's MLflow, here the test store
    # What the image adds: the interpreter on PATH and the package importable.
    env["PATH"] = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONDONTWRITEBYTECODE"] = "1"

    store = models.root.resolve()
    argv = [
        "bwrap",
        *SANDBOX,
        "--ro-bind", str(store), str(store),
        # what the image holds, read-only; bound again over the tmpfs, since a checkout or a
        # virtualenv may itself live under /tmp (CI's clone can)
        *(x for p in _image_paths() for x in ("--ro-bind", p, p)),
        "--chdir", str(REPO),  # the image's WORKDIR: read-only
        "--clearenv",
        *(x for k, v in sorted(env.items()) for x in ("--setenv", k, v)),
        *container["command"],
        *args,
    ]  # fmt: skip
    log = tmp_path / "pod.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        # Poll until the model is loaded, as the startupProbe does (its budget: 5 minutes).
        probe = container["startupProbe"]
        deadline = time.monotonic() + probe["periodSeconds"] * probe["failureThreshold"]
        health = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"server exited {proc.returncode}:\n{log.read_text()}"
            try:
                health = httpx.get(url + "/health", timeout=5)
                if health.status_code == 200 or health.json().get("status") == "failed":
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert health is not None and health.status_code == 200, (
            f"{health and health.text}\n{log.read_text()}"
        )
        assert health.json()["model_version"] == "1"

        records = to_records(models.rows.head(3))
        r = httpx.post(url + "/predict", json={"records": records}, timeout=30)
        assert r.status_code == 200, r.text
        probabilities = r.json()["probabilities"]
        assert len(probabilities) == 3 and all(0.0 <= p <= 1.0 for p in probabilities)

        metrics = httpx.get(url + "/metrics", timeout=10)
        assert metrics.status_code == 200
        assert 'model_version="1"' in metrics.text
        assert "OSError" not in log.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
