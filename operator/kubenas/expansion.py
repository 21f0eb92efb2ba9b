"""Kubernetes' `$(VAR)` expansion of a container's command, args and env values.

Shared by the local runner and the process kubelet; imports nothing heavy (the
kubelet must not load PyTorch).
"""

from __future__ import annotations

import re

# Environment variable names may hold letters, digits, '_', '.' and '-' (not starting with a digit).
_VARIABLE_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def expand(text: str, env: dict[str, str]) -> str:
    """`$(VAR)` becomes VAR's value; `$$` escapes a `$`; an undefined `$(VAR)` stays as
    written, as the kubelet leaves it."""
    return _VARIABLE_REFERENCE.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)
