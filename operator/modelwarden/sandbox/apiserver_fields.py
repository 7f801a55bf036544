"""Server-side apply's field algebra for the API emulator: pure functions, no kmock, no I/O.

A field is a path of dict keys (str) and list items ((merge key, value) tuples). A manager owns
leaves (scalars, atomic lists, empty maps) and the items of keyed lists as wholes, as in
Kubernetes' FieldsV1 where `k:{"name":"x"}` names an item and `.` the item itself. The emulator's
write path (apiserver_writes.py) uses these to merge applied configurations, record
metadata.managedFields and find conflicts between appliers; they live apart because they are the
part of server-side apply that can be read (and tested) without the emulator around it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from typing import Any

from modelwarden.sandbox.apiserver_objects import SERVER_METADATA

_NOT_OWNED_METADATA = (*SERVER_METADATA, "deletionGracePeriodSeconds", "selfLink")

Field = tuple[Any, ...]
_MERGE_KEYS = {"ports": ("containerPort", "port"), "volumeMounts": ("mountPath",), "conditions": ("type",)}
_MISSING = object()


def _merge_key(field: str, *lists: list[Any]) -> str | None:
    """The key naming the items of the lists under `field`: every item has it, with values
    unique within each list; None for an atomic list (replaced as a whole)."""
    every = [item for items in lists for item in items]
    if not every:
        return None
    for key in _MERGE_KEYS.get(field, ("name",)):
        if all(isinstance(item, dict) and isinstance(item.get(key), (str, int)) for item in every) \
                and all(len({item[key] for item in items}) == len(items) for items in lists):
            return key
    return None


def field_values(value: Mapping[str, Any], path: Field = (), out: dict[Field, Any] | None = None) -> dict[Field, Any]:
    """Every owned-able field of an object (or of an applied configuration) and its value."""
    out = {} if out is None else out
    for key, child in value.items():
        if child is None:
            continue
        here = (*path, key)
        if isinstance(child, dict) and child:
            field_values(child, here, out)
        elif isinstance(child, list) and (merge_key := _merge_key(key, child)):
            for item in child:
                at = (*here, (merge_key, item[merge_key]))
                out[at] = True
                field_values(item, at, out)
        else:
            out[here] = child
    return out


def changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> set[Field]:
    before, after = field_values(old), field_values(new)
    return {path for path in before.keys() | after.keys() if before.get(path, _MISSING) != after.get(path, _MISSING)}


def merge_applied(live: Any, config: Any) -> Any:
    """Merge an applied configuration into the live object: maps key by key (null removes a key),
    keyed lists item by item (items only in the live list stay), anything else replaced."""
    if not (isinstance(live, dict) and isinstance(config, dict)):
        return copy.deepcopy(config)
    merged = dict(live)
    for key, value in config.items():
        if value is None:
            merged.pop(key, None)
        elif key not in live:
            merged[key] = copy.deepcopy(value)
        elif isinstance(value, list) and isinstance(live[key], list) and (merge_key := _merge_key(key, live[key], value)):
            applied = {item[merge_key]: item for item in value}
            kept = [merge_applied(item, applied[item[merge_key]]) if item[merge_key] in applied else item for item in live[key]]
            present = {item[merge_key] for item in live[key]}
            merged[key] = kept + [copy.deepcopy(item) for item in value if item[merge_key] not in present]
        else:
            merged[key] = merge_applied(live[key], value)
    return merged


def remove_field(obj: dict[str, Any], path: Field, others: set[Field]) -> None:
    """Remove a field its applier no longer applies (in place), and the maps and lists it leaves
    empty. An item goes as a whole unless another applier owns something in it; a map that grew
    fields since it was applied empty stays; an item keeps its own key."""

    def remove(node: Any, depth: int) -> bool:
        head, last = path[depth], depth == len(path) - 1
        if isinstance(head, tuple):
            for index, item in enumerate(node if isinstance(node, list) else ()):
                if isinstance(item, dict) and item.get(head[0]) == head[1]:
                    if not last:
                        return remove(item, depth + 1)
                    if any(owned[:len(path)] == path for owned in others):
                        return False
                    del node[index]
                    return True
            return False
        if not isinstance(node, dict) or head not in node:
            return False
        if last:
            if (depth and isinstance(path[depth - 1], tuple) and path[depth - 1][0] == head) \
                    or (isinstance(node[head], dict) and node[head]):
                return False
            del node[head]
            return True
        removed = remove(node[head], depth + 1)
        if removed and isinstance(node[head], (dict, list)) and not node[head]:
            del node[head]
        return removed

    if path:
        remove(obj, 0)


def encode_fields(fields: Iterable[Field]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(fields, key=repr):
        node = tree
        for element in path:
            if isinstance(element, str):
                key = f"f:{element}"
            else:
                key = "k:" + json.dumps({element[0]: element[1]}, separators=(",", ":"))
            node = node.setdefault(key, {})
        if path and isinstance(path[-1], tuple):
            node["."] = {}
    return tree


def decode_fields(tree: Mapping[str, Any], path: Field = ()) -> set[Field]:
    fields: set[Field] = set()
    for key, subtree in tree.items():
        if key == ".":
            fields.add(path)
            continue
        if key.startswith("f:"):
            element: Any = key[2:]
        elif key.startswith("k:"):
            element = next(iter(json.loads(key[2:]).items()))
        else:
            continue  # other FieldsV1 notations (v:, i:) are never written here
        if subtree:
            fields |= decode_fields(subtree, (*path, element))
        else:
            fields.add((*path, element))
    return fields


def format_field(path: Field) -> str:
    return "".join(f".{e}" if isinstance(e, str) else f"[{e[0]}={json.dumps(e[1])}]" for e in path)


def ownable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an object fields can be owned in: no apiVersion/kind, no server metadata."""
    view = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    metadata = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _NOT_OWNED_METADATA}
    if metadata:
        view["metadata"] = metadata
    return view
