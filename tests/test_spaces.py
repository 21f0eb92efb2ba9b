import itertools

import pytest

from kubenas import spaces
from kubenas.spaces import Anchor, Choice, InvalidActions
from tests.helpers import search_spec


def macro(**space):
    return spaces.build_space(search_spec(searchSpace={"type": "MacroCNN", "macroCNN": space}).search_space)


def program_steps(space, actions, *, trial_index=0):
    """The decisions a program asks for while `actions` are fed to it."""
    program = space.decisions(trial_index=trial_index)
    steps = [next(program)]
    for action in actions[:-1]:
        steps.append(program.send(action))
    return steps


def test_macro_decision_order_and_decoding() -> None:
    space = macro(depth={"initialLayers": 3})
    # layer 0: anchor (nothing to choose), fh=3, fw=5, filters=36
    # layer 1: anchor [0] (no input: the image), fh=7, fw=1, filters=24
    # layer 2: anchor [1, 1], fh=1, fw=3, filters=64
    actions = [[], 1, 2, 1, [0], 3, 0, 0, [1, 1], 0, 1, 3]
    steps = program_steps(space, actions)
    assert [type(s).__name__ for s in steps] == ["Anchor", "Choice", "Choice", "Choice"] * 3
    assert [s.head for s in steps if isinstance(s, Choice)][:3] == ["filterHeight", "filterWidth", "numFilters"]
    assert [s.layer for s in steps if isinstance(s, Anchor)] == [0, 1, 2]
    architecture = space.decode(actions, trial_index=0)
    assert architecture == {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "MacroCNN",
        "layers": [
            {"filterHeight": 3, "filterWidth": 5, "numFilters": 36, "strideHeight": 1, "strideWidth": 1, "inputs": []},
            {"filterHeight": 7, "filterWidth": 1, "numFilters": 24, "strideHeight": 1, "strideWidth": 1, "inputs": []},
            {"filterHeight": 1, "filterWidth": 3, "numFilters": 64, "strideHeight": 1, "strideWidth": 1, "inputs": [0, 1]},
        ],
    }


def test_without_skip_connections_layers_form_a_chain() -> None:
    space = macro(skipConnections=False, depth={"initialLayers": 3})
    assert not space.uses_anchors
    architecture = space.decode([0, 0, 0] * 3, trial_index=0)
    assert [layer["inputs"] for layer in architecture["layers"]] == [[], [0], [1]]


def test_depth_follows_the_schedule() -> None:
    space = macro(depth={"initialLayers": 2, "increment": 1, "everyTrials": 10, "maxLayers": 3})
    def layers(index):
        actions = []
        program = space.decisions(trial_index=index)
        decision = next(program)
        try:
            while True:
                action = [0] * decision.layer if isinstance(decision, Anchor) else 0
                actions.append(action)
                decision = program.send(action)
        except StopIteration as done:
            return len(done.value["layers"])
    assert [layers(i) for i in (0, 9, 10, 19, 20, 500)] == [2, 2, 3, 3, 3, 3]


def test_strides_that_shrink_below_the_minimum_are_masked() -> None:
    space = macro(strides={"enabled": True}, imageSize=[8, 8], minFeatureSize=4, depth={"initialLayers": 2})
    assert list(space.heads) == ["filterHeight", "filterWidth", "strideHeight", "strideWidth", "numFilters"]
    # layer 0 on the 8x8 image: strides 1 and 2 keep >= 4 pixels, 3 would give 3.
    actions = [[], 0, 0, 1, 0, 0, [1], 0, 0, 0, 0, 0]
    steps = program_steps(space, actions)
    assert steps[3] == Choice("strideHeight", 3, (True, True, False))
    # layer 1 reads layer 0 (4x8 after stride 2 in height): only stride 1 keeps height >= 4.
    assert steps[9] == Choice("strideHeight", 3, (True, False, False))
    assert steps[10] == Choice("strideWidth", 3, (True, True, False))
    with pytest.raises(InvalidActions, match="masked"):
        space.decode([[], 0, 0, 2, 0, 0, [1], 0, 0, 0, 0, 0], trial_index=0)


def test_largest_input_sets_the_feature_size() -> None:
    # layer 0 strides to 4x4; layer 1 reads the image (8x8); layer 2 reads both: zero
    # padding makes its input 8x8, so stride 3 (-> 3x3) is allowed with minFeatureSize 3.
    space = macro(strides={"enabled": True}, imageSize=[8, 8], minFeatureSize=3, depth={"initialLayers": 3})
    actions = [[], 0, 0, 1, 1, 0, [0], 0, 0, 0, 0, 0, [1, 1], 0, 0, 2, 2, 0]
    steps = program_steps(space, actions)
    assert steps[15] == Choice("strideHeight", 3, None)
    assert space.decode(actions, trial_index=0)["layers"][2]["strideHeight"] == 3


def test_decode_rejects_wrong_sequences() -> None:
    space = macro(depth={"initialLayers": 1})
    with pytest.raises(InvalidActions, match="too few"):
        space.decode([[], 0], trial_index=0)
    with pytest.raises(InvalidActions, match="ends after"):
        space.decode([[], 0, 0, 0, 0], trial_index=0)
    with pytest.raises(InvalidActions, match="no option"):
        space.decode([[], 9, 0, 0], trial_index=0)
    with pytest.raises(InvalidActions, match="bits"):
        space.decode([[1], 0, 0, 0], trial_index=0)


def test_nb201_cell_string() -> None:
    space = spaces.build_space(search_spec(searchSpace={"type": "NB201Cell"}).search_space)
    architecture = space.decode([3, 3, 4, 1, 3, 1], trial_index=0)
    assert architecture["cell"] == "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    assert architecture["edges"] == ["nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_3x3", "skip_connect"]
    assert (architecture["channels"], architecture["cellsPerStage"]) == (16, 5)


def test_nb201_space_covers_all_15625_cells_distinctly() -> None:
    space = spaces.build_space(search_spec(searchSpace={"type": "NB201Cell"}).search_space)
    cells = {space.decode(list(actions), trial_index=0)["cell"] for actions in itertools.product(range(5), repeat=6)}
    assert len(cells) == 5**6


def test_summarize() -> None:
    space = macro(depth={"initialLayers": 2})
    architecture = space.decode([[], 1, 1, 0, [0], 0, 0, 3], trial_index=0)
    assert spaces.summarize(architecture) == "2 layers 3x3:24 1x1:64<image"


@pytest.mark.parametrize("space_type", ["MacroCNN", "NB201Cell"])
def test_every_sampled_architecture_fulfils_the_trainer_contract(space_type: str) -> None:
    from kubenas.controller import RandomController
    from kubenas_trainer.architecture import validate_architecture

    spec = search_spec(searchSpace={"type": space_type, "macroCNN": {"strides": {"enabled": True}, "imageSize": [8, 8], "minFeatureSize": 2}})
    space = spaces.build_space(spec.search_space)
    controller = RandomController(space=space, config=spec.controller, seed=0)
    for index in range(0, 4000, 40):  # the depth schedule grows along the way
        architecture = controller.sample(trial_index=index).architecture
        assert validate_architecture(architecture) == architecture


def test_the_spec_offers_the_contracts_operations() -> None:
    from kubenas_trainer.architecture import NB201_OPERATIONS

    assert tuple(search_spec().search_space.nb201_cell.operations) == tuple(NB201_OPERATIONS)
