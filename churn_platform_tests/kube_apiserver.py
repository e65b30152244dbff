"""A real kube-apiserver (with etcd) on 127.0.0.1 for tests.

``kube-apiserver`` is built from Debian's ``kubernetes`` source package by
``.ci/build-kube-apiserver.sh`` (cached under ``$KUBE_CACHE``, default
``/var/cache/churn-kube``); ``etcd`` comes from Debian's ``etcd-server``. Only the API
server runs: no controller manager, scheduler or kubelet, so Deployments never get
pods or a status unless a test writes the status itself.

``KubeApiServer`` starts etcd and the API server on free ports with a temporary data
dir, a self-signed serving certificate (the API server makes it in ``--cert-dir``),
static bearer tokens (an admin in ``system:masters`` and the Dagster service account,
which RBAC authorises through ``deploy/k8s/rbac.yaml``) and service-account signing
keys; it waits for ``/readyz``, installs the Gateway API ``HTTPRoute`` CRD (a structural
subset shipped in ``deploy/schemas``) and hands out a configured
``kubernetes.client.ApiClient``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO / "deploy" / "schemas"
BUILD_SCRIPT = ".ci/build-kube-apiserver.sh"
# The user a service-account token of churn-dagster/churn-dagster authenticates as.
DEPLOYER_USER = "system:serviceaccount:churn-dagster:churn-dagster"


def apiserver_binary() -> Path:
    """Where the built kube-apiserver is: ``$KUBE_APISERVER_BIN`` or ``$KUBE_CACHE/bin``."""
    explicit = os.environ.get("KUBE_APISERVER_BIN")
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("KUBE_CACHE", "/var/cache/churn-kube"))
    return cache / "bin" / "kube-apiserver"


def etcd_binary() -> Path | None:
    """``etcd`` from ``$ETCD_BIN``, the PATH, or Debian's ``/usr/bin/etcd``."""
    explicit = os.environ.get("ETCD_BIN")
    if explicit:
        return Path(explicit)
    found = shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
    return Path(found) if found else None


def missing_reason() -> str | None:
    """Why the API server cannot start here (binary not built), or None when it can."""
    binary = apiserver_binary()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return f"kube-apiserver not built at {binary}: run `bash {BUILD_SCRIPT}` first"
    if etcd_binary() is None:
        return f"etcd not installed: run `bash {BUILD_SCRIPT}` (installs Debian's etcd-server)"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class KubeApiServer:
    """etcd + kube-apiserver processes for one test session; use ``start()``/``stop()``."""

    def __init__(self, workdir: Path | None = None, *, start_timeout: float = 90.0) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="churn-kube-"))
        self.start_timeout = start_timeout
        self.token = secrets.token_hex(16)  # system:masters: bypasses authorisation
        self.deployer_token = secrets.token_hex(16)  # the Dagster service account: RBAC applies
        self.etcd_port = _free_port()
        self.etcd_peer_port = _free_port()
        self.port = _free_port()
        self.host = f"https://127.0.0.1:{self.port}"
        self._procs: list[tuple[str, subprocess.Popen, Path]] = []

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> KubeApiServer:
        """Start etcd and the API server, wait until ready, install the HTTPRoute CRD."""
        reason = missing_reason()
        if reason:
            raise RuntimeError(reason)
        try:
            self._start_etcd()
            self._start_apiserver()
            self._wait_ready()
            self.install_crd(SCHEMAS / "gateway.networking.k8s.io_v1_httproute.json", "HTTPRoute")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop both processes (API server first) and remove the data dir."""
        for _name, proc, _log in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        self._procs.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        self._procs.append((name, proc, log))
        return proc

    def _start_etcd(self) -> None:
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        proc = self._spawn(
            "etcd",
            [
                str(etcd_binary()),
                "--name=churn-test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=churn-test={peer}",
                "--unsafe-no-fsync",  # test data: durability is not the point, speed is
                "--log-level=warn",
            ],
        )
        self._wait_url(f"{client}/health", proc, "etcd", context=None)

    def _start_apiserver(self) -> None:
        certs = self.workdir / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        key = certs / "sa.key"
        subprocess.run(
            ["openssl", "genrsa", "-out", str(key), "2048"],
            check=True,
            capture_output=True,
        )
        pub = certs / "sa.pub"
        subprocess.run(
            ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)],
            check=True,
            capture_output=True,
        )
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(
            f'{self.token},churn-test-admin,churn-test-admin,"system:masters"\n'
            f"{self.deployer_token},{DEPLOYER_USER},{DEPLOYER_USER},"
            f'"system:serviceaccounts,system:serviceaccounts:churn-dagster"\n'
        )
        self._spawn(
            "kube-apiserver",
            [
                str(apiserver_binary()),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                "--insecure-port=0",  # 1.20 still opens :8080 without auth unless told not to
                f"--cert-dir={certs}",  # a self-signed serving cert is generated here
                f"--token-auth-file={tokens}",
                # RBAC, so deploy/k8s/rbac.yaml is exercised for the deployer token; the admin
                # token is in system:masters and passes regardless.
                "--authorization-mode=RBAC",
                f"--service-account-key-file={pub}",
                f"--service-account-signing-key-file={key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--allow-privileged=false",
                "--profiling=false",
                "--watch-cache=false",
                "--v=1",
            ],
        )

    def _ssl_context(self) -> ssl.SSLContext:
        # The serving certificate is self-signed for this one run; trust exactly it.
        return ssl.create_default_context(cafile=str(self.ca_file))

    @property
    def ca_file(self) -> Path:
        """The API server's self-signed serving certificate (written at start-up)."""
        return self.workdir / "certs" / "apiserver.crt"

    def _wait_url(
        self,
        url: str,
        proc: subprocess.Popen,
        name: str,
        context: ssl.SSLContext | None,
        headers: dict[str, str] | None = None,
    ) -> None:
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log = next(lg for n, p, lg in self._procs if p is proc)
                raise RuntimeError(
                    f"{name} exited with code {proc.returncode} before becoming ready; "
                    f"last log lines:\n{_tail(log)}"
                )
            if context is None and url.startswith("https"):
                if not self.ca_file.exists():
                    time.sleep(0.2)
                    continue
                context = self._ssl_context()
            try:
                req = urllib.request.Request(url, headers=headers or {})
                with urllib.request.urlopen(req, timeout=2, context=context) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}: {exc.read()[:300]!r}"
            except (OSError, ssl.SSLError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.3)
        log = next(lg for n, p, lg in self._procs if p is proc)
        raise RuntimeError(
            f"{name} not ready at {url} after {self.start_timeout:.0f}s ({last}); "
            f"last log lines:\n{_tail(log)}"
        )

    def _wait_ready(self) -> None:
        proc = next(p for n, p, _ in self._procs if n == "kube-apiserver")
        self._wait_url(
            f"{self.host}/readyz",
            proc,
            "kube-apiserver",
            context=None,
            headers={"Authorization": f"Bearer {self.token}"},
        )

    # -- clients -------------------------------------------------------------------

    def configuration(self, token: str | None = None):  # -> kubernetes.client.Configuration
        """A ``kubernetes.client.Configuration`` for this server (admin token by default)."""
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.host
        cfg.api_key = {"BearerToken": token or self.token}
        cfg.api_key_prefix = {"BearerToken": "Bearer"}
        # The generated certificate is for 127.0.0.1 (the advertise address): full checks.
        cfg.ssl_ca_cert = str(self.ca_file)
        return cfg

    def api_client(self, token: str | None = None):  # -> kubernetes.client.ApiClient
        """A new ``kubernetes.client.ApiClient`` (admin unless ``token``); close it when done."""
        from kubernetes import client

        return client.ApiClient(self.configuration(token))

    def kubeconfig(self, path: Path) -> Path:
        """Write a kubeconfig for this server to ``path`` (for code that takes a file)."""
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "churn-test",
                    "cluster": {
                        "server": self.host,
                        "certificate-authority": str(self.ca_file),
                    },
                }
            ],
            "users": [{"name": "churn-test-admin", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "churn-test",
                    "context": {"cluster": "churn-test", "user": "churn-test-admin"},
                }
            ],
            "current-context": "churn-test",
        }
        path.write_text(json.dumps(doc, indent=2))
        return path

    def install_crd(self, schema_file: Path, kind: str, timeout: float = 30.0) -> None:
        """Create a Gateway API v1 CRD for ``kind`` from a structural schema; wait until served."""
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        schema = json.loads(schema_file.read_text())
        schema.pop("description", None)
        plural = kind.lower() + "s"
        group = "gateway.networking.k8s.io"
        crd = {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {
                "name": f"{plural}.{group}",
                # The API server refuses *.k8s.io groups without this approval annotation.
                "annotations": {
                    "api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/gateway-api"
                },
            },
            "spec": {
                "group": group,
                "names": {
                    "kind": kind,
                    "listKind": f"{kind}List",
                    "plural": plural,
                    "singular": kind.lower(),
                },
                "scope": "Namespaced",
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {"openAPIV3Schema": schema},
                        "subresources": {"status": {}},
                    }
                ],
            },
        }
        with self.api_client() as api:
            ext = client.ApiextensionsV1Api(api)
            try:
                ext.create_custom_resource_definition(crd)
            except ApiException as exc:
                if exc.status != 409:
                    raise
            custom = client.CustomObjectsApi(api)
            deadline = time.monotonic() + timeout
            while True:
                got = ext.read_custom_resource_definition(f"{plural}.{group}")
                established = any(
                    c.type == "Established" and c.status == "True"
                    for c in (got.status.conditions or [])
                )
                if established:
                    try:
                        custom.list_namespaced_custom_object(group, "v1", "default", plural)
                        return
                    except ApiException as exc:
                        if exc.status != 404:
                            raise
                if time.monotonic() > deadline:
                    raise RuntimeError(f"CRD {plural}.{group} not served after {timeout:.0f}s")
                time.sleep(0.2)


@contextmanager
def running_kube_apiserver() -> Iterator[KubeApiServer]:
    """Start etcd + kube-apiserver for the ``with`` block, then stop them."""
    server = KubeApiServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
