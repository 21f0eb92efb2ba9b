"""Credentials: a kubeconfig's token reaches both clients; a 401 re-reads it once."""

import aiohttp
import aiohttp.web
import yaml

from kubenas.operator import names
from kubenas.operator.connection import load_connection


def kubeconfig(path, *, server, token):
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": "team-a"}}],
    }))
    return path


def test_kubeconfig_gives_server_token_and_namespace(tmp_path):
    connection = load_connection(kubeconfig=str(kubeconfig(tmp_path / "kc", server="https://k8s:6443", token="t1")))
    assert (connection.server, connection.token, connection.namespace) == ("https://k8s:6443", "t1", "team-a")
    info = connection.kopf_info()
    assert info.server == "https://k8s:6443" and info.token == "t1" and info.scheme == "Bearer"


async def test_a_rotated_token_is_read_again_after_a_401(tmp_path):
    seen = []

    async def handler(request):
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != "Bearer t2":
            return aiohttp.web.json_response({"kind": "Status", "reason": "Unauthorized", "message": "no"}, status=401)
        return aiohttp.web.json_response({"kind": "ConfigMap", "metadata": {"name": "x"}})

    app = aiohttp.web.Application()
    app.router.add_get("/api/v1/namespaces/default/configmaps/x", handler)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    path = kubeconfig(tmp_path / "kc", server=f"http://127.0.0.1:{port}", token="t1")
    client = load_connection(kubeconfig=str(path)).client(
        fresh_token=lambda: load_connection(kubeconfig=str(path)).token)
    try:
        kubeconfig(path, server=f"http://127.0.0.1:{port}", token="t2")  # the token rotates
        found = await client.get(names.CONFIGMAPS, namespace="default", name="x")
        assert found["metadata"]["name"] == "x"
        assert seen == ["Bearer t1", "Bearer t2"]
    finally:
        await client.close()
        await runner.cleanup()
