"""`kubectl get` against the emulator: the Table form of a list or an object, with a custom
resource's additionalPrinterColumns evaluated as the API server does (the JSONPath subset CRDs
use: dotted fields, [n] and [?(@.field=="value")] filters); dates read as ages, like the real one."""

from __future__ import annotations

import datetime
import re
from typing import Any

from modelwarden.api.duration import format_age

TABLE_ACCEPT = re.compile(r"as=Table")
_STEP = re.compile(r"\.([A-Za-z0-9_-]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_.-]+)\s*==\s*[\"']([^\"']*)[\"']\)\]")


def wants_table(accept: str | None) -> bool:
    return bool(accept and TABLE_ACCEPT.search(accept))


def jsonpath(obj: Any, path: str) -> Any:
    """The first value `path` selects in `obj`, or None."""
    values, position = [obj], 0
    while position < len(path):
        match = _STEP.match(path, position)
        if match is None:
            return None
        position = match.end()
        field, index, filter_field, filter_value = match.groups()
        found: list[Any] = []
        for value in values:
            if field is not None and isinstance(value, dict) and field in value:
                found.append(value[field])
            elif index is not None and isinstance(value, list) and int(index) < len(value):
                found.append(value[int(index)])
            elif filter_field is not None and isinstance(value, list):
                found += [item for item in value if isinstance(item, dict) and str(jsonpath(item, "." + filter_field)) == filter_value]
        values = found
    return values[0] if values else None


def table(items: list[dict[str, Any]], columns: list[dict[str, Any]], resource_version: str) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table: Name, then the printer columns (or Age when a kind has none)."""
    columns = columns or [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
    now = datetime.datetime.now(datetime.timezone.utc)
    rows = []
    for item in items:
        cells: list[Any] = [item.get("metadata", {}).get("name")]
        for column in columns:
            value = jsonpath(item, column["jsonPath"])
            age = format_age(str(value), now) if column.get("type") == "date" and value is not None else None
            cells.append(age if age is not None else value)
        rows.append({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                                "metadata": item.get("metadata", {})}})
    definitions = [{"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0}]
    definitions += [{"name": c["name"], "type": c.get("type", "string"), "format": c.get("format", ""),
                     "description": c.get("description", ""), "priority": c.get("priority", 0)} for c in columns]
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": definitions, "rows": rows}
