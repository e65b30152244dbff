"""The local target: model versions as detached processes on 127.0.0.1 behind a router.

``LocalProcessTarget`` (``target``) composes the parts, one module each:

* ``process``: sockets, the children's environment, start, health wait, stop;
* ``state``: ``state.json`` per environment under ``state_dir``, changed under a lock;
* ``supervisor``: starting one server process and waiting until it is healthy;
* ``router``: the weighted router per environment and its backend table;
* ``prometheus``: the file_sd listings (``prometheus/targets.json``, ``routers.json``)
  and the rendered ``deploy/local/prometheus.yml``.
"""

from churn_platform.targets.local.process import (
    PROJECT_ROOT,
    bind_socket,
    child_env,
    is_running,
    log_tail,
    spawn,
    stop_process,
    wait_healthy,
)
from churn_platform.targets.local.prometheus import (
    ALERT_RULES,
    PROMETHEUS_TEMPLATE,
    render_prometheus_config,
    router_targets_file,
)
from churn_platform.targets.local.state import ProcessRecord
from churn_platform.targets.local.target import LocalProcessTarget

__all__ = [
    "ALERT_RULES",
    "PROJECT_ROOT",
    "PROMETHEUS_TEMPLATE",
    "LocalProcessTarget",
    "ProcessRecord",
    "bind_socket",
    "child_env",
    "is_running",
    "log_tail",
    "render_prometheus_config",
    "router_targets_file",
    "spawn",
    "stop_process",
    "wait_healthy",
]
