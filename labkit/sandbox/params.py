"""Query parameters read the way the Kubernetes API server reads them.

The API server decodes boolean parameters (``watch``, ``follow``, ``previous``, ``timestamps``, ``tty``, ...)
with Go's ``strconv.ParseBool``: ``1 t T TRUE true True`` are true, ``0 f F FALSE false False`` are false, and
anything else is a 400. Clients differ in what they send: kubectl writes ``true``, kubernetes_asyncio ``True``.

Examples:
    >>> [parse_bool(v) for v in ("1", "t", "True", "TRUE", "0", "F", "false")]
    [True, True, True, True, False, False, False]
    >>> parse_bool("yes")
    Traceback (most recent call last):
    ...
    labkit.sandbox.params.ParamError: strconv.ParseBool: parsing "yes": invalid syntax
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ParamError", "parse_bool", "query_bool"]

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


class ParamError(ValueError):
    """A query parameter that does not parse; the API server answers it with a 400 BadRequest."""


def parse_bool(value: str) -> bool:
    """Go's ``strconv.ParseBool``; raises :class:`ParamError` with Go's message for anything else."""
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ParamError(f'strconv.ParseBool: parsing "{value}": invalid syntax')


def query_bool(query: Mapping[str, str], name: str) -> bool:
    """A boolean query parameter: absent or empty is false, as for the API server."""
    value = query.get(name)
    return False if value in (None, "") else parse_bool(str(value))
