"""Boolean query parameters read the way the Kubernetes API server reads them.

The API server converts a boolean parameter (``watch``, ``follow``, ``previous``, ``timestamps``, ``tty``, ...)
with apimachinery's ``Convert_Slice_string_To_bool``, not with ``strconv.ParseBool``: only ``0`` and ``false``
in any case are false, anything else present (``true``, ``True``, ``1``, ``t``, even ``yes`` or an empty value)
is true, and nothing is refused. Clients differ in what they send: kubectl writes ``true``, kubernetes_asyncio
``True``. :func:`labkit.sandbox.validation.parse_query` rewrites every known boolean to ``true``/``false`` before a
handler runs; :func:`query_bool` reads either form.

Examples:
    >>> [parse_bool(v) for v in ("1", "t", "True", "TRUE", "yes", "", "0", "false", "False", "FALSE")]
    [True, True, True, True, True, True, False, False, False, False]
    >>> query_bool({"watch": "True"}, "watch"), query_bool({}, "watch")
    (True, False)
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["parse_bool", "query_bool"]


def parse_bool(value: str) -> bool:
    """A present boolean parameter: false only for ``0`` and ``false`` (any case)."""
    return not (value == "0" or value.lower() == "false")


def query_bool(query: Mapping[str, str], name: str) -> bool:
    """A boolean query parameter; absent is false."""
    value = query.get(name)
    return value is not None and parse_bool(str(value))
