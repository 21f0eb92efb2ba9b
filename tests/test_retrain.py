"""spec.retrain without a cluster: which children are retrained, the retraining pod
template and Job, the trainer's --evaluate-test and --save-model, local mode's retrain
phase, and `kubenas export --weights`."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from kubenas import spec as specs
from kubenas.export import export_model
from kubenas.local import run_search
from kubenas.operator import names
from kubenas.operator.spec_checks import SearchFailed, parse_spec
from kubenas.operator.retrain import ANNOTATION_INDEX, LABEL_RETRAIN_RANK, job_name, retrain_job
from kubenas.retrain import candidates, judge, retrain_trial
from kubenas.search import Search, failure
from kubenas_trainer.cli import main as trainer_main
from kubenas_trainer.data import DIGITS_TEST_SIZE, load_dataset
from kubenas_trainer.models import build_model
from tests.helpers import manifest, succeeded

FAKE_TRAINER = str(Path(__file__).with_name("fake_trainer.py"))
SMALL_SPACE = {"type": "MacroCNN", "macroCNN": {
    "filterHeights": [1, 3], "filterWidths": [1, 3], "numFilters": [8, 16], "imageSize": [8, 8],
    "depth": {"initialLayers": 2, "increment": 0, "maxLayers": 2}}}
OWNER = {"apiVersion": "kubenas.io/v1alpha1", "kind": "NeuralArchitectureSearch",
         "metadata": {"name": "digits", "namespace": "team-a", "uid": "search-uid"}}


def retrain_spec(retrain: dict | None = None, **spec) -> specs.SearchSpec:
    body = {"searchSpace": SMALL_SPACE, "controller": {"batchSize": 2}, "maxTrials": 6,
            "retrain": {"topK": 3, **(retrain or {})}, **spec}
    return specs.parse_manifest(manifest(body, name="digits")).spec


def searched(spec: specs.SearchSpec, accuracies: dict[int, float | None], *, order: list[int]) -> Search:
    """A search whose children `order` were told (None: the child failed)."""
    search = Search(spec)
    for _ in accuracies:
        search.ask()
    for index in order:
        accuracy = accuracies[index]
        search.tell(index, failure("Error") if accuracy is None else succeeded(accuracy))
    return search


# --- which children -------------------------------------------------------------------


def test_the_best_children_by_reward_ties_to_the_earlier_child_whatever_the_order_told():
    spec = retrain_spec()
    accuracies = {0: 0.5, 1: 0.9, 2: 0.7, 3: 0.9, 4: None, 5: 0.95}
    chosen = None
    for order in ([0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [3, 5, 0, 4, 1, 2]):
        ranked = candidates(searched(spec, accuracies, order=order), 3)
        assert [(c.rank, c.index) for c in ranked] == [(1, 5), (2, 1), (3, 3)]  # 1 and 3 tie: 1 first
        assert ranked[0].reward == pytest.approx(0.95 ** 3)
        assert chosen is None or ranked == chosen
        chosen = ranked
    # Fewer successes than topK: those there are; a restored engine chooses the same.
    search = searched(spec, {0: None, 1: 0.6, 2: None}, order=[0, 1, 2])
    assert [c.index for c in candidates(search, 5)] == [1]
    restored = Search.restore(spec, searched(spec, accuracies, order=[2, 0, 1, 5, 3, 4]).to_bytes())
    assert candidates(restored, 3) == chosen
    assert candidates(searched(spec, {0: None}, order=[0]), 3) == []


def test_retrain_spec_defaults_limits_and_refusals():
    spec = specs.parse_manifest(manifest({"retrain": {}})).spec
    assert spec.retrain.top_k == 5 and spec.retrain.template.args == [] and spec.retrain.model_dir is None
    assert specs.parse_manifest(manifest({})).spec.retrain is None
    for bad, words in (({"topK": 0}, "retrain.topK"), ({"topK": 11}, "retrain.topK"),
                       ({"modelDir": "models"}, "retrain.modelDir"), ({"epochs": 3}, "retrain.epochs")):
        with pytest.raises(specs.SpecError, match=words.replace(".", r"\.")):
            specs.parse_manifest(manifest({"retrain": bad}))
    tabular = {"searchSpace": {"type": "NB201Cell"}, "trial": {"kind": "Tabular", "tabular": {}}, "retrain": {}}
    with pytest.raises(specs.SpecError, match="retrain needs trial.kind Job"):
        specs.parse_manifest(manifest(tabular))


def test_the_retraining_template_appends_args_sets_env_and_replaces_resources():
    trial = {"kind": "Job", "activeDeadlineSeconds": 60, "template": {"spec": {"containers": [
        {"name": "trainer", "command": ["python", "-m", "kubenas_trainer"], "args": ["--epochs", "4"],
         "env": [{"name": "KEEP", "value": "k"}, {"name": "LR", "value": "0.1"}],
         "resources": {"limits": {"cpu": "1"}}, "volumeMounts": [{"name": "models", "mountPath": "/models"}]},
        {"name": "sidecar", "image": "busybox"}], "volumes": [{"name": "models", "emptyDir": {}}]}}}
    spec = retrain_spec({"template": {"args": ["--epochs", "300"], "env": [{"name": "LR", "value": "0.05"}],
                                      "resources": {"limits": {"nvidia.com/gpu": 1}}},
                         "activeDeadlineSeconds": 7200, "modelDir": "/models"}, trial=trial)
    changed = retrain_trial(spec.trial, spec.retrain, model_path="/models/digits-retrain-1.pt")
    container = changed.template.spec.containers[0]
    assert container.args == ["--epochs", "4", "--epochs", "300"]  # the trainer takes the last
    assert [(v.name, v.value) for v in container.env] == [
        ("KUBENAS_EVALUATE_TEST", "1"), ("KUBENAS_SAVE_MODEL", "/models/digits-retrain-1.pt"), ("KEEP", "k"),
        ("LR", "0.05")]
    assert container.resources == {"limits": {"nvidia.com/gpu": 1}}
    assert container.model_dump()["volumeMounts"] == [{"name": "models", "mountPath": "/models"}]  # passed through
    assert [c.name for c in changed.template.spec.containers] == ["trainer", "sidecar"]
    assert changed.active_deadline_seconds == 7200
    # The search's own template is untouched, and without resources they stay the search's.
    assert spec.trial.template.spec.containers[0].args == ["--epochs", "4"]
    plain = retrain_spec(trial=trial)
    kept = retrain_trial(plain.trial, plain.retrain, model_path=None).template.spec.containers[0]
    assert kept.resources == {"limits": {"cpu": "1"}} and "KUBENAS_SAVE_MODEL" not in {v.name for v in kept.env}


def test_a_retraining_job_is_the_search_s_own_not_a_child():
    spec = retrain_spec({"modelDir": "/models", "template": {"args": ["--epochs", "9"]}})
    search = searched(spec, {0: 0.6, 1: 0.8, 2: 0.7}, order=[0, 1, 2])
    best = candidates(search, 3)[0]
    job = retrain_job(owner=OWNER, spec=spec, candidate=best)
    assert job["metadata"]["name"] == job_name("digits", 1) == "digits-retrain-1"
    assert job["metadata"]["labels"][LABEL_RETRAIN_RANK] == "1"
    assert job["metadata"]["labels"][names.LABEL_COMPONENT] == "retrain"
    assert job["metadata"]["annotations"] == {ANNOTATION_INDEX: "1"}
    assert job["metadata"]["ownerReferences"][0]["uid"] == "search-uid"
    pod = job["spec"]["template"]
    assert names.LABEL_TRIAL_INDEX not in pod["metadata"]["labels"]  # the children's pod watch ignores it
    assert pod["metadata"]["labels"][LABEL_RETRAIN_RANK] == "1"
    trainer = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in trainer["env"]}
    assert env["KUBENAS_EVALUATE_TEST"] == "1" and env["KUBENAS_SAVE_MODEL"] == "/models/digits-retrain-1.pt"
    assert json.loads(env["KUBENAS_ARCHITECTURE"]) == best.architecture
    assert trainer["args"][-2:] == ["--epochs", "9"]
    assert pod["spec"]["restartPolicy"] == "Never" and pod["spec"]["automountServiceAccountToken"] is False
    # A retraining template that cannot make a Job is refused with the spec (InvalidSpec).
    body = manifest({"retrain": {"template": {"resources": {"limits": ["not", "a", "map"]}}}}, name="digits")
    body["metadata"].update(namespace="team-a")
    with pytest.raises(SearchFailed) as refused:
        parse_spec(body)
    assert refused.value.reason == "InvalidSpec" and "limits" in refused.value.message


def test_a_retraining_job_waits_in_the_search_s_kueue_queue_too():
    """A search whose children queue in Kueue retrains through the same queue: suspended
    *and* labelled (a suspended Job without the label would wait for ever)."""
    spec = retrain_spec({"template": {"args": ["--epochs", "9"]}})
    spec = spec.model_copy(update={"trial": spec.trial.model_copy(update={"queue_name": "gpus"})})
    best = candidates(searched(spec, {0: 0.6, 1: 0.8}, order=[0, 1]), 1)[0]
    job = retrain_job(owner=OWNER, spec=spec, candidate=best)
    assert job["spec"]["suspend"] is True and job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpus"
    assert job["metadata"]["labels"][LABEL_RETRAIN_RANK] == "1"


def test_verdicts_of_retrained_children():
    ok = {**succeeded([0.5, 0.8, 0.7]), "testAccuracy": 0.75}
    verdict = judge(ok)
    assert (verdict.phase, verdict.reason, verdict.validation_accuracy, verdict.test_accuracy) == (
        "Succeeded", "Succeeded", 0.7, 0.75)  # the last epoch's: the weights tested
    assert judge(succeeded(0.8)).reason == "NoTestAccuracy"
    for bad in (math.nan, 1.5, True, "0.9"):
        assert judge({**succeeded(0.8), "testAccuracy": bad}).reason == "MalformedResult"
    assert judge(failure("OOMKilled", "out of memory")).reason == "OOMKilled"
    assert judge({"status": "Succeeded", "validationAccuracy": [2.0], "testAccuracy": 0.5}).reason == "MalformedResult"
    assert judge("garbage").reason == "MalformedResult"


# --- the trainer ------------------------------------------------------------------------

ARCH = {"apiVersion": "kubenas.io/v1alpha1", "kind": "MacroCNN", "layers": [
    {"filterHeight": 3, "filterWidth": 3, "numFilters": 16, "strideHeight": 1, "strideWidth": 1, "inputs": []},
    {"filterHeight": 1, "filterWidth": 3, "numFilters": 16, "strideHeight": 1, "strideWidth": 1, "inputs": [0]}]}


def rows(images: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in images}


def test_digits_test_split_is_held_out_of_training_and_the_search_split_is_unchanged():
    cpu = torch.device("cpu")
    search, retrain = (load_dataset(name="digits", data_dir=None, device=cpu, seed=0, test=t) for t in (False, True))
    assert search.test_x is None
    assert torch.equal(search.val_x, retrain.val_x) and torch.equal(search.val_y, retrain.val_y)
    assert len(retrain.test_x) == DIGITS_TEST_SIZE and len(retrain.train_x) == len(search.train_x) - DIGITS_TEST_SIZE
    assert torch.equal(torch.cat([retrain.train_x, retrain.test_x]), search.train_x)  # same images, same inputs
    train, val, test = rows(retrain.train_x), rows(retrain.val_x), rows(retrain.test_x)
    assert not (test & train) and not (test & val)


def test_trainer_evaluates_the_test_split_and_saves_its_weights(tmp_path: Path):
    result_file, model = tmp_path / "result.json", tmp_path / "models" / "child.pt"
    argv = ["--architecture", json.dumps(ARCH), "--dataset", "digits", "--epochs", "10", "--batch-size", "32",
            "--learning-rate", "0.05", "--threads", "1", "--result-file", str(result_file)]
    assert trainer_main([*argv, "--evaluate-test", "--save-model", str(model)]) == 0
    doc = json.loads(result_file.read_text())
    assert doc["status"] == "Succeeded" and 0.5 < doc["testAccuracy"] <= 1.0  # 10 epochs learn digits well past chance
    assert judge(doc).phase == "Succeeded"
    state = torch.load(model, weights_only=True)
    net = build_model(ARCH, in_channels=1, num_classes=10)
    net.load_state_dict(state)
    assert not list(model.parent.glob("*.tmp*"))  # written atomically
    # The saved weights are the ones scored: evaluated again, the test accuracy is the same.
    data = load_dataset(name="digits", data_dir=None, device=torch.device("cpu"), seed=0, test=True)
    with torch.no_grad():
        correct = (net.eval()(data.test_x).argmax(1) == data.test_y).float().mean().item()
    assert correct == pytest.approx(doc["testAccuracy"], abs=1e-5)
    # Without the flags: no testAccuracy, nothing saved; an unwritable path fails ModelNotSaved (exit 7).
    assert trainer_main(argv) == 0 and "testAccuracy" not in json.loads(result_file.read_text())
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert trainer_main([*argv, "--epochs", "1", "--save-model", str(blocker / "model.pt")]) == 7
    assert json.loads(result_file.read_text())["reason"] == "ModelNotSaved"


def test_trainer_cifar10_test_batch(tmp_path: Path, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, count in (("data_batch_1", 40), ("test_batch", 12)):
        batch = {b"labels": rng.integers(0, 10, count).tolist(), b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    data = load_dataset(name="cifar10", data_dir=str(tmp_path), device=torch.device("cpu"), seed=0, test=True)
    assert data.test_x.shape == (12, 3, 32, 32) and len(data.train_x) + len(data.val_x) == 40
    tiny = {**ARCH, "layers": ARCH["layers"][:1]}
    result_file = tmp_path / "result.json"
    monkeypatch.setenv("KUBENAS_EVALUATE_TEST", "1")  # the environment's form, as the operator passes it
    argv = ["--architecture", json.dumps(tiny), "--dataset", "cifar10", "--data-dir", str(tmp_path), "--epochs", "1",
            "--batch-size", "16", "--threads", "1", "--result-file", str(result_file)]
    assert trainer_main(argv) == 0
    assert 0 <= json.loads(result_file.read_text())["testAccuracy"] <= 1
    (folder / "test_batch").unlink()
    assert trainer_main(argv) == 4  # DataNotFound names the missing test_batch
    assert "test_batch" in json.loads(result_file.read_text())["message"]


# --- local mode -------------------------------------------------------------------------


def local_manifest(*, name: str, container: dict, retrain: dict, **spec) -> dict:
    body = {"searchSpace": SMALL_SPACE, "controller": {"batchSize": 2}, "reward": {"lastEpochs": 1}, "maxTrials": 3,
            "parallelism": 2, "trial": {"kind": "Job", "template": {"spec": {"containers": [container]}}},
            "retrain": retrain, **spec}
    return manifest(body, name=name)


def run_locally(document: dict, tmp_path: Path, **options):
    return asyncio.run(run_search(specs.parse_manifest(document), document, runs_dir=tmp_path / "runs", **options))


def test_local_search_retrains_the_best_digits_children_and_best_json_gains_the_test_accuracy(tmp_path: Path):
    container = {"name": "trainer", "command": ["python", "-m", "kubenas_trainer"],
                 "args": ["--dataset", "digits", "--epochs", "1", "--batch-size", "32", "--learning-rate", "0.05"]}
    document = local_manifest(name="digits-retrain", container=container, retrain={
        "topK": 2, "template": {"args": ["--epochs", "6"]}})
    result = run_locally(document, tmp_path)
    assert result.phase == "Succeeded"
    best = json.loads((tmp_path / "runs" / "digits-retrain" / "best.json").read_text())
    ranked = candidates(result.search, 2)
    assert [e["index"] for e in best["retrain"]] == [c.index for c in ranked] and best["index"] == ranked[0].index
    assert [e["rank"] for e in best["retrain"]] == [1, 2]
    assert all(e["phase"] == "Succeeded" for e in best["retrain"])
    assert best["test_accuracy"] == best["retrain"][0]["testAccuracy"] and 0.3 < best["test_accuracy"] <= 1
    for entry in best["retrain"]:
        log = (tmp_path / "runs" / "digits-retrain" / "retrain" / f"{entry['index']:06d}" / "log.txt").read_text()
        assert "epoch 6/6" in log and "test_acc" in log  # the longer recipe, then the test set once
        net = build_model({c.index: c.architecture for c in ranked}[entry["index"]], in_channels=1, num_classes=10)
        net.load_state_dict(torch.load(entry["modelPath"], weights_only=True))
    assert result.retrain == best["retrain"]


def test_local_retrain_failures_are_named_resume_reuses_finished_ones_and_restart_forgets_them(tmp_path: Path):
    container = {"name": "trainer", "command": ["python", FAKE_TRAINER]}
    failing = local_manifest(name="fake-retrain", container=container, retrain={
        "topK": 2, "template": {"env": [{"name": "FAKE_MODE", "value": "fail"}]}})
    result = run_locally(failing, tmp_path)
    assert result.phase == "Succeeded"  # a failed retraining does not fail the search
    assert [(e["phase"], e["reason"], e["testAccuracy"]) for e in result.retrain] == [
        ("Failed", "InvalidArchitecture", None)] * 2
    best_file = tmp_path / "runs" / "fake-retrain" / "best.json"
    assert json.loads(best_file.read_text())["test_accuracy"] is None
    # --restart with a working template: retrained afresh (the failures are forgotten).
    working = local_manifest(name="fake-retrain", container=container, retrain={"topK": 2})
    result = run_locally(working, tmp_path, restart=True)
    assert [e["phase"] for e in result.retrain] == ["Succeeded", "Succeeded"]
    first = json.loads(best_file.read_text())
    assert first["test_accuracy"] == result.retrain[0]["testAccuracy"]
    # --resume: the finished retrained children are reused, not run again.
    marker = tmp_path / "runs" / "fake-retrain" / "retrain" / f"{result.retrain[0]['index']:06d}" / "log.txt"
    marker.write_text("kept")
    again = run_locally(working, tmp_path, resume=True)
    assert again.retrain == result.retrain and marker.read_text() == "kept"


# --- export -----------------------------------------------------------------------------


def test_export_bundles_the_weights_and_the_module_loads_them(tmp_path: Path):
    net = build_model(ARCH, in_channels=1, num_classes=10)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.uniform_(-1, 1)  # not the initialisation's values
    weights = tmp_path / "retrained.pt"
    torch.save(net.state_dict(), weights)
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"index": 3, "architecture": ARCH}))
    output = tmp_path / "out" / "model.py"
    output.parent.mkdir()
    with pytest.raises(specs.SpecError, match="--in-channels 1"):  # digits weights, CIFAR's default channels
        export_model(source=best, output=output, weights=weights)
    assert not output.exists()
    bundled = export_model(source=best, output=output, in_channels=1, weights=weights)
    assert bundled == tmp_path / "out" / "model.pt" and bundled.exists()
    module_spec = importlib.util.spec_from_file_location("exported_with_weights", output)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    loaded = module.load()
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    images = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(images), net.eval()(images))
    not_weights = tmp_path / "notes.pt"
    not_weights.write_bytes(b"a text file, not a torch file")
    with pytest.raises(specs.SpecError, match="not a state_dict"):
        export_model(source=best, output=tmp_path / "m.py", in_channels=1, weights=not_weights)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_trainer_on_cuda_saves_cpu_weights_that_reproduce_its_test_accuracy(tmp_path: Path):
    """On CUDA the model is channels_last under bf16 autocast: the saved state_dict is
    plain contiguous CPU tensors, loadable anywhere, and the test accuracy is the weights'."""
    result_file, model = tmp_path / "result.json", tmp_path / "model.pt"
    assert trainer_main(["--architecture", json.dumps(ARCH), "--dataset", "digits", "--epochs", "10",
                         "--batch-size", "32", "--learning-rate", "0.05", "--device", "cuda", "--evaluate-test",
                         "--save-model", str(model), "--result-file", str(result_file)]) == 0
    doc = json.loads(result_file.read_text())
    state = torch.load(model, weights_only=True)
    assert all(t.device.type == "cpu" and t.is_contiguous() for t in state.values())
    net = build_model(ARCH, in_channels=1, num_classes=10).eval()
    net.load_state_dict(state)
    data = load_dataset(name="digits", data_dir=None, device=torch.device("cpu"), seed=0, test=True)
    with torch.no_grad():
        correct = (net(data.test_x).argmax(1) == data.test_y).float().mean().item()
    assert doc["device"] == "cuda" and correct == pytest.approx(doc["testAccuracy"], abs=0.02)  # bf16 vs fp32
