"""Credentials: a kubeconfig (or the in-cluster service account), loaded by the
`kubernetes` client library, shared by kopf's login and the operator's own client."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import kopf
import kubernetes

from kubenas.operator.kube import KubeClient


@dataclass(frozen=True)
class Connection:
    server: str
    token: str | None
    ca_path: str | None
    certificate_path: str | None
    private_key_path: str | None
    insecure: bool
    namespace: str | None  # the kubeconfig context's namespace, if any

    def kopf_info(self) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(
            server=self.server, token=self.token, scheme="Bearer" if self.token else None, ca_path=self.ca_path,
            certificate_path=self.certificate_path, private_key_path=self.private_key_path,
            insecure=self.insecure, default_namespace=self.namespace,
        )

    def client(self, *, fresh_token: Callable[[], str | None] | None = None) -> KubeClient:
        return KubeClient.connect(
            server=self.server, token=self.token, ca_path=self.ca_path, certificate_path=self.certificate_path,
            private_key_path=self.private_key_path, insecure=self.insecure, fresh_token=fresh_token,
        )


def load_connection(*, kubeconfig: str | None, context: str | None = None) -> Connection:
    """From `kubeconfig` (or $KUBECONFIG, ~/.kube/config) or, inside a pod, the
    service account. Raises kubernetes.config.ConfigException when neither works."""
    configuration = kubernetes.client.Configuration()
    namespace = None
    if kubeconfig is None and _in_cluster():
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    else:
        kubernetes.config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
        _, active = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig)
        namespace = (active or {}).get("context", {}).get("namespace")
    header = configuration.get_api_key_with_prefix("BearerToken") or configuration.get_api_key_with_prefix("authorization")
    token = header.split(" ", 1)[-1] if header else None
    return Connection(
        server=configuration.host, token=token, ca_path=configuration.ssl_ca_cert,
        certificate_path=configuration.cert_file, private_key_path=configuration.key_file,
        insecure=not configuration.verify_ssl, namespace=namespace,
    )


def _in_cluster() -> bool:
    import os

    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(
        "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )


def service_account(token: str | None) -> tuple[str, str] | None:
    """(namespace, name) of the ServiceAccount a token belongs to, from its `sub` claim
    (`system:serviceaccount:NS:NAME`); None for other credentials. The token is only
    read, never trusted: the API server checks it, this names whom to protect."""
    import base64
    import json

    parts = (token or "").split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    subject = claims.get("sub") if isinstance(claims, dict) else None
    if not isinstance(subject, str) or not subject.startswith("system:serviceaccount:"):
        return None
    namespace, _, name = subject.removeprefix("system:serviceaccount:").partition(":")
    return (namespace, name) if namespace and name else None
