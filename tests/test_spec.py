from pathlib import Path

import pytest
import yaml

from kubenas import spec as specs
from tests.helpers import manifest, search_spec

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_defaults_are_the_papers() -> None:
    spec = search_spec()
    space = spec.search_space.macro_cnn
    assert space.filter_heights == [1, 3, 5, 7] and space.filter_widths == [1, 3, 5, 7]
    assert space.num_filters == [24, 36, 48, 64]
    assert space.strides.enabled is False and space.strides.heights == [1, 2, 3]
    assert (space.depth.initial_layers, space.depth.increment, space.depth.every_trials) == (6, 2, 1600)
    controller = spec.controller
    assert (controller.lstm_layers, controller.lstm_size, controller.init_range) == (2, 35, 0.08)
    assert (controller.learning_rate, controller.batch_size) == (0.0006, 8)
    assert (spec.reward.aggregate, spec.reward.last_epochs, spec.reward.power) == ("max", 5, 3.0)
    assert (spec.max_trials, spec.parallelism) == (12800, 800)


def test_depth_schedule() -> None:
    depth = search_spec().search_space.macro_cnn.depth
    assert [depth.layers_for(i) for i in (0, 1599, 1600, 3199, 3200, 12799, 99999)] == [6, 6, 8, 8, 10, 20, 20]


def test_reward_transform() -> None:
    reward = search_spec().reward
    assert reward.of([0.95, 0.1, 0.5, 0.6, 0.7, 0.8]) == pytest.approx(0.8**3)  # max of the last 5
    assert search_spec(reward={"aggregate": "last", "lastEpochs": 1, "power": 1}).reward.of([0.9, 0.7]) == 0.7
    assert search_spec(reward={"aggregate": "mean", "lastEpochs": 2, "power": 2}).reward.of([0.5, 0.4, 0.6]) == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("patch", "path", "why"),
    [
        ({"controller": {"learningRate": 0}}, "spec.controller.learningRate", "greater than 0"),
        ({"controller": {"lstmSize": "big"}}, "spec.controller.lstmSize", "integer"),
        ({"controller": {"strategy": "ppo"}}, "spec.controller.strategy", "'reinforce', 'evolution' or 'random'"),
        ({"controler": {}}, "spec.controler", "Extra inputs"),
        ({"searchSpace": {"macroCNN": {"filterHeights": [3, 4]}}}, "spec.searchSpace.macroCNN.filterHeights", "odd"),
        ({"searchSpace": {"macroCNN": {"numFilters": []}}}, "spec.searchSpace.macroCNN.numFilters", "at least 1"),
        ({"searchSpace": {"macroCNN": {"strides": {"heights": [1, 1]}}}}, "spec.searchSpace.macroCNN.strides.heights", "distinct"),
        ({"searchSpace": {"macroCNN": {"depth": {"initialLayers": 8, "maxLayers": 4}}}}, "spec.searchSpace.macroCNN.depth", "maxLayers"),
        ({"searchSpace": {"macroCNN": {"imageSize": [2, 2], "minFeatureSize": 4}}}, "spec.searchSpace.macroCNN", "no architecture"),
        ({"searchSpace": {"nb201Cell": {"operations": ["conv_9x9"]}}}, "spec.searchSpace.nb201Cell.operations[0]", "none"),
        ({"maxTrials": 0}, "spec.maxTrials", "greater than or equal to 1"),
        ({"trial": {"kind": "Job"}}, "spec.trial", "needs `template`"),
        ({"trial": {"kind": "Tabular", "tabular": {"path": "t.csv"}}}, "spec", "NB201Cell architectures only"),
    ],
)
def test_bad_fields_are_named(patch: dict, path: str, why: str) -> None:
    document = manifest()
    document["spec"].update(patch)
    with pytest.raises(specs.SpecError) as caught:
        specs.parse_manifest(document, source="bad.yaml")
    lines = str(caught.value).splitlines()
    assert lines[0].startswith("bad.yaml: invalid NeuralArchitectureSearch")
    assert any(line.strip().startswith(f"{path}:") and why in line for line in lines[1:]), str(caught.value)


def test_bad_metadata_and_kind() -> None:
    document = manifest(name="Not_A_DNS_Name")
    document["kind"] = "Search"
    with pytest.raises(specs.SpecError) as caught:
        specs.parse_manifest(document)
    text = str(caught.value)
    assert "metadata.name:" in text and "kind:" in text


def test_load_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(specs.SpecError, match="cannot read"):
        specs.load_manifest(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed")
    with pytest.raises(specs.SpecError, match="not valid YAML"):
        specs.load_manifest(broken)
    other = tmp_path / "other.yaml"
    other.write_text("kind: ConfigMap\n")
    with pytest.raises(specs.SpecError, match="exactly one NeuralArchitectureSearch"):
        specs.load_manifest(other)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    manifest = specs.load_manifest(path)
    assert manifest.metadata.name == path.stem
    # Every example states its fields explicitly where they differ from defaults; the
    # round trip through the model keeps them.
    assert manifest.model_dump(mode="json", by_alias=True)["spec"]["maxTrials"] == yaml.safe_load(path.read_text())["spec"]["maxTrials"]
