import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kubenas import spaces
from kubenas.controller import RandomController
from kubenas_trainer.models import build_model
from tests.helpers import search_spec


def sampled(spec, index=0):
    space = spaces.build_space(spec.search_space)
    controller = RandomController(space=space, config=spec.controller, seed=index)
    return controller.sample(trial_index=0).architecture


def load(path: Path):
    module_spec = importlib.util.spec_from_file_location(f"exported_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("spec", "in_channels"),
    [
        (search_spec(searchSpace={"macroCNN": {"strides": {"enabled": True}, "imageSize": [8, 8]}}), 1),
        (search_spec(searchSpace={"type": "NB201Cell", "nb201Cell": {"channels": 4, "cellsPerStage": 1}}), 3),
    ],
    ids=["MacroCNN", "NB201Cell"],
)
def test_exported_module_is_standalone_and_identical(tmp_path: Path, spec, in_channels: int) -> None:
    architecture = sampled(spec)
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"index": 0, "architecture": architecture, "reward": 0.5}))
    output = tmp_path / "model.py"
    done = subprocess.run(
        [sys.executable, "-m", "kubenas.cli", "export", str(best), "-o", str(output), "--in-channels", str(in_channels)],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    imports = set()
    for node in ast.walk(ast.parse(output.read_text())):
        if isinstance(node, ast.Import):
            imports |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0
            imports.add(node.module.split(".")[0])
    assert imports <= {"__future__", "collections", "torch", "math", "typing"}
    run = subprocess.run([sys.executable, "-I", str(output)], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0 and "parameters" in run.stdout, run.stderr

    exported = load(output).build(num_classes=10).eval()
    reference = build_model(architecture, in_channels=in_channels, num_classes=10).eval()
    exported.load_state_dict(reference.state_dict(), strict=True)
    images = torch.randn(2, in_channels, 8, 8)
    with torch.no_grad():
        assert torch.equal(exported(images), reference(images))


def test_export_rejects_a_bad_architecture(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"apiVersion": "kubenas.io/v1alpha1", "kind": "MacroCNN", "layers": [{"filterHeight": 2}]}))
    done = subprocess.run([sys.executable, "-m", "kubenas.cli", "export", str(bad), "-o", str(tmp_path / "m.py")], capture_output=True, text=True)
    assert done.returncode == 2
    assert "invalid architecture" in done.stderr and "layers[0]" in done.stderr
    assert not (tmp_path / "m.py").exists()
