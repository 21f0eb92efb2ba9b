"""The real kubectl against the emulated cluster (kubenas.testing.DevCluster)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from kubenas.testing.cluster import DevCluster
from tests.test_apiserver import WIDGET_CRD

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH")


@dataclasses.dataclass(frozen=True)
class Done:
    returncode: int
    stdout: str
    stderr: str


@dataclasses.dataclass(frozen=True)
class Kubectl:
    cluster: DevCluster
    base: tuple[str, ...]

    async def __call__(self, *args: str, input: object = None, check: bool = True) -> Done:
        stdin = None if input is None else (input if isinstance(input, str) else yaml.safe_dump(input)).encode()
        process = await asyncio.create_subprocess_exec(
            *self.base, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(stdin), 30)
        done = Done(process.returncode or 0, stdout.decode(), stderr.decode())
        assert not check or done.returncode == 0, f"kubectl {' '.join(args)}: {done.stdout}{done.stderr}"
        return done


@pytest.fixture
async def kubectl(tmp_path: Path) -> AsyncIterator[Kubectl]:
    async with DevCluster(port=0, workdir=tmp_path / "nodes") as cluster:
        cluster.write_kubeconfig(tmp_path / "kubeconfig")
        yield Kubectl(
            cluster, ("kubectl", "--kubeconfig", str(tmp_path / "kubeconfig"), "--cache-dir", str(tmp_path / "cache"))
        )


def widget(name: str, **spec: object) -> dict:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}


async def test_custom_resources_with_kubectl(kubectl: Kubectl) -> None:
    assert "created" in (await kubectl("apply", "-f", "-", input=WIDGET_CRD)).stdout
    assert "unchanged" in (await kubectl("apply", "-f", "-", input=WIDGET_CRD)).stdout
    await kubectl("apply", "-f", "-", input=widget("small", size=2))
    assert "configured" in (await kubectl("apply", "-f", "-", input=widget("small", size=3))).stdout

    listed = (await kubectl("get", "widgets")).stdout.splitlines()
    assert listed[0].split() == ["NAME", "SIZE"] and listed[1].split() == ["small", "3"]
    as_yaml = yaml.safe_load((await kubectl("get", "wdg", "small", "-o", "yaml")).stdout)
    assert as_yaml["spec"] == {"size": 3, "color": "blue"} and as_yaml["metadata"]["generation"] == 2
    explained = (await kubectl("explain", "wdg.spec")).stdout
    assert "size\t<integer>" in explained and "How big the widget is." in explained
    described = (await kubectl("describe", "wdg", "small")).stdout
    assert "Name:         small" in described and "Size:   3" in described

    invalid = await kubectl("apply", "-f", "-", input=widget("tiny", size=0), check=False)
    assert invalid.returncode != 0 and "spec.size: Invalid value: 0" in invalid.stderr
    unknown = await kubectl("apply", "-f", "-", input=widget("odd", size=1, shape="x"), check=False)
    assert unknown.returncode != 0 and 'unknown field "spec.shape"' in unknown.stderr

    assert 'widget.example.com "small" deleted' in (await kubectl("delete", "wdg", "small")).stdout
    assert "NotFound" in (await kubectl("get", "wdg", "small", check=False)).stderr


async def test_configmaps_events_and_logs_with_kubectl(kubectl: Kubectl) -> None:
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "1"}}
    await kubectl("apply", "-f", "-", input=config)
    await kubectl("apply", "-f", "-", input=config | {"data": {"a": "2", "b": "3"}})
    listed = (await kubectl("get", "configmaps")).stdout.splitlines()
    assert listed[0].split()[0] == "NAME" and listed[1].split()[0] == "settings"
    assert json.loads((await kubectl("get", "cm", "settings", "-o", "json")).stdout)["data"] == {"a": "2", "b": "3"}

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hello"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "echo hello; echo world"]}],
        },
    }
    await kubectl("apply", "-f", "-", input=pod)
    await kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/hello", "--timeout=20s")
    assert (await kubectl("logs", "hello")).stdout == "hello\nworld\n"
    assert (await kubectl("logs", "hello", "--tail=1")).stdout == "world\n"

    uid = json.loads((await kubectl("get", "pod", "hello", "-o", "json")).stdout)["metadata"]["uid"]
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "hello.1"},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": "hello", "namespace": "default", "uid": uid},
        "reason": "Greeted",
        "message": "said hello",
        "type": "Normal",
    }
    await kubectl("apply", "-f", "-", input=event)
    assert "said hello" in (await kubectl("describe", "pod", "hello")).stdout


async def test_get_watch_with_kubectl(kubectl: Kubectl) -> None:
    await kubectl("apply", "-f", "-", input=WIDGET_CRD)
    await kubectl("apply", "-f", "-", input=widget("first", size=1))
    watching = await asyncio.create_subprocess_exec(
        *kubectl.base, "get", "widgets", "--watch", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert watching.stdout is not None
        async with asyncio.timeout(20):
            assert (await watching.stdout.readline()).split() == [b"NAME", b"SIZE"]
            assert (await watching.stdout.readline()).split() == [b"first", b"1"]
            await kubectl("apply", "-f", "-", input=widget("second", size=2))
            assert (await watching.stdout.readline()).split() == [b"second", b"2"]
    finally:
        watching.kill()
        await watching.wait()
