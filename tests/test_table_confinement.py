"""Tabular tables as the operator reads them: built-in ones, or CSV files under its
--tabular-dir and nowhere else; and no message, in either mode, quotes a file's contents."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubenas import spec as specs
from kubenas.evaluators import TabularEvaluator, read_table

SECRET = "SECRET-TOKEN-abc123xyz"


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "good.csv").write_text("cellstr,cifar10-val\n|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,10.0\n")
    token = tmp_path / "token"
    token.write_text(SECRET + "\n")
    (tables / "link.csv").symlink_to(token)
    (tables / "nested").mkdir()
    return tables, token


def test_files_under_the_directory_are_read(layout):
    tables, _ = layout
    assert read_table("good.csv", "cifar10-val", directory=tables, confined=True) == pytest.approx(
        {"|none~0|+|none~0|none~1|+|none~0|none~1|none~2|": 0.1})
    assert read_table(str(tables / "good.csv"), "cifar10-val", directory=tables, confined=True)
    assert read_table("nested/../good.csv", "cifar10-val", directory=tables, confined=True)  # stays inside


def test_built_in_tables_need_no_directory():
    assert len(TabularEvaluator(specs.Tabular(), confined=True).table) == 15625


@pytest.mark.parametrize("path", ["TOKEN", "/etc/passwd", "../token", "nested/../../token", "link.csv",
                                  "/var/run/secrets/kubernetes.io/serviceaccount/token"])
def test_nothing_outside_the_directory_is_read(layout, path):
    tables, token = layout
    path = str(token) if path == "TOKEN" else path
    with pytest.raises(specs.SpecError, match="outside the operator's table directory") as refused:
        read_table(path, "cifar10-val", directory=tables, confined=True)
    assert SECRET not in str(refused.value) and "root:" not in str(refused.value)


def test_without_a_directory_only_built_in_tables_are_read(layout):
    tables, _ = layout
    with pytest.raises(specs.SpecError, match="reads only the built-in tables"):
        read_table(str(tables / "good.csv"), "cifar10-val", directory=None, confined=True)


@pytest.mark.parametrize("confined", [False, True])
def test_a_wrong_file_is_refused_without_quoting_it(layout, confined):
    """Locally (any file the user names) as in the operator (a file under its directory)."""
    tables, token = layout
    leaky = tables / "leaky.csv"
    leaky.write_text(f"{SECRET},x\n")
    numbers = tables / "numbers.csv"
    numbers.write_text(f"cellstr,cifar10-val\nc,{SECRET}\n")
    for path in (leaky, numbers, token if not confined else leaky):
        with pytest.raises(specs.SpecError) as refused:
            read_table(str(path), "cifar10-val", directory=tables, confined=confined)
        assert SECRET not in str(refused.value), str(refused.value)
