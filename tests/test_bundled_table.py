"""The NAS-Bench-201 12-epoch table shipped in the package (builtin:nb201-12epoch)."""

import fnmatch
import importlib.resources
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from kubenas import spec as specs
from kubenas.evaluators import TabularEvaluator, read_table
from kubenas.spaces import cell_string
from tests.helpers import manifest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "nb201-tabular.yaml"
CELL = re.compile(r"^\|[a-z0-9_]+~0\|\+\|[a-z0-9_]+~0\|[a-z0-9_]+~1\|\+\|[a-z0-9_]+~0\|[a-z0-9_]+~1\|[a-z0-9_]+~2\|$")


@pytest.fixture(scope="module")
def bundled() -> dict[str, float]:
    return read_table("builtin:nb201-12epoch", "cifar10-val")


def test_the_bundled_table_loads(bundled: dict[str, float]) -> None:
    assert len(bundled) == 15_625
    assert all(CELL.match(cell) for cell in bundled)
    # arch 1 of the file (cifar10-val 82.834 %), in this package's cell-string form
    cell = cell_string(["nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_3x3", "skip_connect"])
    assert bundled[cell] == pytest.approx(0.82834)
    assert all(0.0 <= accuracy <= 1.0 for accuracy in bundled.values())  # percent in the file, fractions here
    assert max(bundled.values()) == pytest.approx(0.84892)  # the optimum README.md's benchmark quotes
    assert len(read_table("builtin:nb201-12epoch", "imagenet-val")) == 15_625  # other metrics too


def test_builtin_and_omitted_path_name_the_bundled_table(bundled: dict[str, float]) -> None:
    assert specs.Tabular().path == specs.DEFAULT_TABLE == "builtin:nb201-12epoch"
    for tabular in ({}, {"path": "builtin:nb201-12epoch"}, {"metric": "cifar10-val"}):
        document = manifest({"searchSpace": {"type": "NB201Cell"}, "trial": {"kind": "Tabular", "tabular": tabular}})
        parsed = specs.parse_manifest(document).spec.trial.tabular
        assert parsed.path == "builtin:nb201-12epoch"
        assert TabularEvaluator(parsed).table == bundled


def test_an_unknown_builtin_table_is_a_spec_error_naming_the_field() -> None:
    document = manifest({"searchSpace": {"type": "NB201Cell"}, "trial": {"kind": "Tabular", "tabular": {"path": "builtin:xyz"}}})
    with pytest.raises(specs.SpecError) as error:
        specs.parse_manifest(document)
    assert "spec.trial.tabular.path" in str(error.value)
    assert "'builtin:xyz'" in str(error.value) and "builtin:nb201-12epoch" in str(error.value)


def test_a_missing_table_file_still_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(specs.SpecError, match="spec.trial.tabular.path: cannot read"):
        TabularEvaluator(specs.Tabular(path=str(tmp_path / "absent.csv")))


def test_the_package_carries_the_table_and_its_notice() -> None:
    data = importlib.resources.files("kubenas") / "data"
    assert (data / "nb201-12epoch.csv.gz").is_file()
    notice = (data / "NOTICE").read_text()
    assert "MIT" in notice and "BayesWatch" in notice and "NAS-Bench-201" in notice
    # and a non-editable install (a wheel) carries them: they are package data
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["kubenas"]
    for name in ("data/nb201-12epoch.csv.gz", "data/NOTICE"):
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name


def test_the_example_runs_from_any_directory(tmp_path: Path) -> None:
    example = specs.load_manifest(EXAMPLE).spec
    assert example.trial.kind == "Tabular" and example.trial.tabular.path.startswith("builtin:")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "kubenas.cli", "search", str(EXAMPLE), "--runs-dir", "runs", "--no-live", "--max-trials", "6"],
        cwd=elsewhere, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    records = [json.loads(line) for line in (elsewhere / "runs" / "nb201-tabular" / "trials.jsonl").read_text().splitlines()]
    assert len(records) == 6
    assert all(0.0 < record["reward"] < 1.0 for record in records)
