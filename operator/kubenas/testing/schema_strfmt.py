"""The string formats `validate` checks, as go-openapi's strfmt judges them.

date-time, date, byte, uuid, ipv4 and ipv6; any other format passes.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Callable
from datetime import date

from kubenas.testing.schema_format import INVALID, FieldError, _field, go_quote

_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_TIME_OF_DAY = re.compile(r"^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$")
_UUID = re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$", re.IGNORECASE)
_IPV4 = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")


def _is_date(text: str) -> bool:
    match = _DATE.match(text)
    if not match:
        return False
    try:
        date(*map(int, match.groups()))
    except ValueError:
        return False
    return True


def _is_date_time(text: str) -> bool:
    """strfmt.IsDateTime: a date, a 't', a time of day with a zone."""
    parts = text.lower().split("t")
    if len(text) < 4 or len(parts) < 2 or not _is_date(parts[0]):
        return False
    match = _TIME_OF_DAY.match(parts[1])
    return bool(match) and match[1] <= "23" and match[2] <= "59" and match[3] <= "59"


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except ValueError:
        return False
    return True


def _is_ipv4(text: str) -> bool:
    match = _IPV4.match(text)
    return bool(match) and all(int(octet) <= 255 for octet in match.groups())


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


_FORMATS: dict[str, Callable[[str], bool]] = {
    "datetime": _is_date_time,
    "date": _is_date,
    "byte": _is_base64,
    "uuid": lambda text: bool(_UUID.match(text)),
    "ipv4": _is_ipv4,
    "ipv6": _is_ipv6,
}


def _format_errors(value: str, schema: dict, path: str) -> list[FieldError]:
    fmt = schema.get("format", "")
    # strfmt knows "date-time", "datetime" and "date_time" as one format.
    check = _FORMATS.get(fmt.lower().replace("-", "").replace("_", ""))
    if check is None or check(value):
        return []
    return [FieldError(_field(path), INVALID, value, f"{path} in body must be of type {fmt}: {go_quote(value)}")]
