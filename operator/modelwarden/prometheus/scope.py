"""Custom checks read only their own namespace's series (#14): every series selector of a custom
check's query must carry an equality matcher on the namespace label with the policy's namespace,
so one tenant's policy cannot read another tenant's metrics through the operator's Prometheus
(`--restrict-custom-queries`, on by default). Pure: parses with promql-parser, no I/O."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import promql_parser

_CHILDREN = ("expr", "lhs", "rhs", "vector_selector", "param")


def foreign_selectors(promql: str, namespace: str, label: str) -> list[str]:
    """The selectors of `promql` (as written) that are not limited to `label="namespace"`;
    raises ValueError when the query does not parse."""
    try:
        expr = promql_parser.parse(promql)
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"not valid PromQL: {exc}") from None
    return [selector.prettify() for selector in _selectors(expr) if not _limited(selector, namespace, label)]


def _selectors(node: Any) -> Iterator[Any]:
    if type(node).__name__ == "VectorSelector":
        yield node
        return
    for name in _CHILDREN:
        child = getattr(node, name, None)
        if child is not None and not isinstance(child, (str, int, float)):
            yield from _selectors(child)
    for arg in getattr(node, "args", None) or ():
        yield from _selectors(arg)


def _limited(selector: Any, namespace: str, label: str) -> bool:
    matchers = selector.matchers
    groups = [list(matchers.matchers)] + [list(group) for group in (matchers.or_matchers or [])]
    groups = [group for group in groups if group] or [[]]
    return all(any(m.name == label and m.op == promql_parser.MatchOp.Equal and m.value == namespace for m in group)
               for group in groups)
