"""Deployment targets: where model versions run and how traffic is split between them.

Both implement ``core.rollout.DeploymentTarget`` (deploy, set_weights, state, retire),
so ``core.canary.run_canary`` drives either one:

* ``targets.local.LocalProcessTarget``: model-server processes on 127.0.0.1 behind a
  weighted router per environment (the default; ``python -m churn_platform.serving
  status|stop`` reads its state);
* ``targets.kubernetes.KubernetesTarget``: a Deployment and Service per version and a
  Gateway API ``HTTPRoute`` whose weights split the traffic, composed of a workload part
  (``targets.kubernetes.workloads``) and a route part (``targets.kubernetes.routes``).

No Dagster here: the Dagster resources that configure these targets are in
``resources/deployment_target.py``. A new target is a class with the four protocol methods,
beside these, plus a resource there. Nothing is imported at package level, so the CLI
does not pay for the Kubernetes client.
"""
