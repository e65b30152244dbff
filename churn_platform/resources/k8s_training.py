"""Running the training step in its own Kubernetes pod (kubernetes environment only).

Two ways, both optional; the asset definitions pick one:

* ``k8s_job_executor``: every step of a run gets its own pod, in the code-location
  image. ``training_op_tags`` gives the ``dagster-k8s/config`` tag that sizes the
  training step's pod (put it in the asset's ``op_tags``).
* Dagster Pipes: ``run_training_in_pod`` starts a pod from a separate training image
  with ``dagster_k8s.PipesK8sClient`` and streams its logs, metadata and materialisation
  back into the asset's run. The training image's entry point must speak Pipes
  (``dagster_pipes.open_dagster_pipes()``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["training_container_resources", "training_op_tags", "run_training_in_pod"]


def training_container_resources(cpu: str = "2", memory: str = "4Gi") -> dict[str, Any]:
    """Requests equal to limits: a training pod gets what it asked for, or waits."""
    if not cpu or not memory:
        raise ValueError(f"training pod needs cpu and memory, got cpu={cpu!r} memory={memory!r}")
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}}


def training_op_tags(cpu: str = "2", memory: str = "4Gi") -> dict[str, Any]:
    """``op_tags`` for the training asset under ``k8s_job_executor`` (its own pod size)."""
    return {
        "dagster-k8s/config": {
            "container_config": {"resources": training_container_resources(cpu, memory)},
            "pod_spec_config": {"restart_policy": "Never"},
        }
    }


def run_training_in_pod(
    context: Any,
    *,
    pipes_client: Any,
    image: str,
    command: Sequence[str],
    namespace: str | None = None,
    env: Mapping[str, str] | None = None,
    cpu: str = "2",
    memory: str = "4Gi",
    extras: Mapping[str, Any] | None = None,
) -> Any:
    """Run ``command`` in ``image`` as a pod through ``PipesK8sClient``; return its invocation.

    ``pipes_client`` is a ``dagster_k8s.PipesK8sClient`` (a resource, so tests can pass a
    fake); the caller returns ``invocation.get_materialize_result()`` from the asset.
    """
    if not image:
        raise ValueError("run_training_in_pod needs the training image reference")
    if not command:
        raise ValueError(f"run_training_in_pod needs a command to run in {image}")
    return pipes_client.run(
        context=context,
        image=image,
        command=list(command),
        namespace=namespace,
        env=dict(env or {}),
        extras=dict(extras or {}),
        base_pod_spec={
            "restart_policy": "Never",
            "containers": [
                {
                    "name": "dagster-pipes-execution",
                    "resources": training_container_resources(cpu, memory),
                }
            ],
        },
    )
