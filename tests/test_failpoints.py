"""The failpoint setting itself (the crashes are tried in test_operator_e2e.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kubenas.operator import failpoints


def test_setting_arms_named_failpoints_with_counts():
    assert failpoints._parse("after-checkpoint@3, in-policy-update") == {"after-checkpoint": 3, "in-policy-update": 1}
    assert failpoints._parse("") == {}
    with pytest.raises(ValueError, match="unknown failpoint 'nowhere'"):
        failpoints._parse("nowhere")


def test_the_nth_pass_exits_at_once_and_the_earlier_ones_do_not():
    program = ("from kubenas.operator.failpoints import failpoint\n"
               "for n in range(5):\n    print(n, flush=True)\n    failpoint('after-checkpoint')\n")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          env={"KUBENAS_FAILPOINTS": "after-checkpoint@2", "PATH": ""})
    assert done.returncode == failpoints.EXIT_CODE
    assert done.stdout.split() == ["0", "1"]
    assert "failpoint after-checkpoint" in done.stderr
