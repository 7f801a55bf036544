"""Offline stand-ins for API-server admission: schema + CEL for our CRs, kubernetes-validate for
built-ins, and third-party CRD schemas from ../shared/schemas.

Our CRs are checked the way `kubectl apply` (strict field validation) and the API server check
them: the schema's defaults applied, the structural schema with unknown fields rejected, then
every `x-kubernetes-validations` rule evaluated with cel-python at its place in the object. Errors read like the API server's:
`spec.canary.weight: Invalid value: 150: must be less than or equal to 100`.
"""

from __future__ import annotations

import copy
import functools
import pathlib
from collections.abc import Iterator
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import re2
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRD_DIR = ROOT / "crds"
SHARED_SCHEMAS = ROOT.parent / "shared" / "schemas"
KUBERNETES_VERSION = "1.32"


def _is_sorted(values: Any) -> celpy.celtypes.BoolType:
    items = list(values)
    return celpy.celtypes.BoolType(all(a <= b for a, b in zip(items, items[1:])))


def _find_all(text: Any, pattern: Any, limit: Any = -1) -> celpy.celtypes.ListType:
    found = [celpy.celtypes.StringType(m.group(0)) for m in re2.finditer(str(pattern), str(text))]
    return celpy.celtypes.ListType(found if int(limit) < 0 else found[: int(limit)])


def _sum(values: Any) -> Any:
    items = list(values)
    if not items:
        return celpy.celtypes.IntType(0)
    total = items[0]
    for item in items[1:]:
        total = total + item
    return total


def _substring(text: Any, start: Any, end: Any = None) -> celpy.celtypes.StringType:
    return celpy.celtypes.StringType(str(text)[int(start): None if end is None else int(end)])


def _replace(text: Any, old: Any, new: Any, count: Any = -1) -> celpy.celtypes.StringType:
    return celpy.celtypes.StringType(str(text).replace(str(old), str(new), int(count)))


def _lower_ascii(text: Any) -> celpy.celtypes.StringType:
    return celpy.celtypes.StringType("".join(c.lower() if c.isascii() else c for c in str(text)))


# Kubernetes CEL library functions our rules use that plain CEL lacks (the regex, lists and
# strings libraries of the API server).
CEL_EXTENSIONS = {"isSorted": _is_sorted, "findAll": _find_all, "sum": _sum, "substring": _substring,
                  "replace": _replace, "lowerAscii": _lower_ascii}


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<root>"


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """Reject unknown fields (kubectl's default strict field validation) where the schema is closed."""
    node = copy.deepcopy(schema)
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        node["additionalProperties"] = False
        node["properties"] = {k: _strict(v) for k, v in node["properties"].items()}
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _strict(node["additionalProperties"])
    if "items" in node:
        node["items"] = _strict(node["items"])
    return node


def _load_crds(directory: pathlib.Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema for every served version of every CRD in a folder."""
    schemas = {}
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            for version in doc["spec"]["versions"]:
                key = (f"{doc['spec']['group']}/{version['name']}", doc["spec"]["names"]["kind"])
                schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


@functools.cache
def our_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    return _load_crds(CRD_DIR)


@functools.cache
def third_party_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    return _load_crds(SHARED_SCHEMAS)


def _cel_rules(schema: dict[str, Any], value: Any, path: list[Any]) -> Iterator[tuple[dict[str, Any], Any, list[Any]]]:
    """Every (rule, value it applies to, path) in an object, walking the schema beside it."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield rule, value, path
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                yield from _cel_rules(sub, value[key], [*path, key])
        if isinstance(schema.get("additionalProperties"), dict):
            for key, item in value.items():
                yield from _cel_rules(schema["additionalProperties"], item, [*path, key])
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            yield from _cel_rules(schema["items"], item, [*path, index])


@functools.cache
def _cel_program(rule: str) -> celpy.Runner:
    env = celpy.Environment()
    return env.program(env.compile(rule), functions=CEL_EXTENSIONS)


def cel_errors(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    errors = []
    for rule, value, path in _cel_rules(schema, obj, []):
        try:
            result = _cel_program(rule["rule"]).evaluate({"self": celpy.json_to_cel(value)})
        except celpy.CELEvalError as exc:
            errors.append(f"{_path(path)}: rule {rule['rule']!r} failed to evaluate: {exc}")
            continue
        if isinstance(result, celpy.CELEvalError) or not bool(result):
            where = _path([*path, *[p for p in rule.get("fieldPath", "").split(".") if p]])
            errors.append(f"{where}: Invalid value: {rule.get('message', rule['rule'])}")
    return errors


def _describe(error: jsonschema.ValidationError) -> list[str]:
    """One jsonschema error in the API server's words, naming the exact field."""
    path = list(error.absolute_path)
    if error.validator == "required":
        missing = [key for key in error.validator_value if key not in error.instance]
        return [f"{_path([*path, key])}: Required value" for key in missing]
    if error.validator == "additionalProperties":
        known = set(error.schema.get("properties", {}))
        return [f"{_path([*path, key])}: unknown field" for key in error.instance if key not in known]
    return [f"{_path(path)}: Invalid value: {error.message}"]


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """A copy of an object with the schema's defaults filled in, as the API server does before it
    validates (a default applies where the field is absent and its parent object is present)."""
    value = copy.deepcopy(value)

    def walk(node: dict[str, Any], item: Any) -> None:
        if isinstance(item, dict):
            for key, sub in node.get("properties", {}).items():
                if key not in item and "default" in sub:
                    item[key] = copy.deepcopy(sub["default"])
                if key in item:
                    walk(sub, item[key])
            if isinstance(node.get("additionalProperties"), dict):
                for sub_item in item.values():
                    walk(node["additionalProperties"], sub_item)
        elif isinstance(item, list) and "items" in node:
            for sub_item in item:
                walk(node["items"], sub_item)

    walk(schema, value)
    return value


def numbers_as_doubles(schema: dict[str, Any], value: Any) -> Any:
    """Values of `type: number` fields as floats: Kubernetes CEL types them double even when the
    manifest writes 120, so `self.max > 0.0` holds for `max: 120`."""
    if schema.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        properties, extra = schema.get("properties", {}), schema.get("additionalProperties")
        return {k: numbers_as_doubles(properties.get(k) or (extra if isinstance(extra, dict) else {}), v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [numbers_as_doubles(schema.get("items", {}), v) for v in value]
    return value


def set_errors(schema: dict[str, Any], value: Any, path: list[Any] | None = None) -> list[str]:
    """`x-kubernetes-list-type: set` lists hold no value twice (the API server's "Duplicate value")."""
    path = path or []
    errors = []
    if isinstance(value, dict):
        properties, extra = schema.get("properties", {}), schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key) or (extra if isinstance(extra, dict) else None)
            if sub:
                errors += set_errors(sub, item, [*path, key])
    elif isinstance(value, list):
        if schema.get("x-kubernetes-list-type") == "set":
            seen: list[Any] = []
            for index, item in enumerate(value):
                if item in seen:
                    errors.append(f"{_path([*path, index])}: Duplicate value: {item!r}")
                seen.append(item)
        for index, item in enumerate(value):
            errors += set_errors(schema.get("items", {}), item, [*path, index])
    return errors


def schema_errors(schema: dict[str, Any], obj: dict[str, Any], strict: bool = True) -> list[str]:
    # The API server always accepts the type and object metadata, whether or not a CRD lists them;
    # a CRD may constrain metadata.name only, and the rest of metadata is never "unknown".
    metadata = schema.get("properties", {}).get("metadata", {"type": "object"})
    root = {**schema, "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                     **schema.get("properties", {}), "metadata": {"type": "object"}}}
    root = _strict(root) if strict else root
    root["properties"]["metadata"] = metadata
    validator = jsonschema.Draft4Validator(root)
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    return [line for error in errors for line in _describe(error)]


def validate_custom_resource(obj: dict[str, Any]) -> list[str]:
    """Errors the API server would give for one of our CRs (empty when it is accepted)."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    schema = our_schemas().get(key)
    if schema is None:
        return [f"apiVersion/kind: no CRD in crds/ serves {key}"]
    obj = apply_defaults(schema, obj)
    errors = schema_errors(schema, obj) + set_errors(schema, obj)
    obj = numbers_as_doubles(schema, obj)
    # Like the API server, CEL rules run only on objects that pass the structural schema.
    return errors or cel_errors(schema, obj)


def validate_third_party(obj: dict[str, Any]) -> list[str]:
    """Schema errors against a CRD from ../shared/schemas (HTTPRoute, VirtualService, ServiceMonitor…)."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    schema = third_party_schemas().get(key)
    if schema is None:
        return [f"apiVersion/kind: no schema in ../shared/schemas for {key}"]
    return schema_errors(schema, obj, strict=True)


def validate_builtin(obj: dict[str, Any]) -> list[str]:
    """kubernetes-validate in strict mode (unknown fields are errors)."""
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{_path(exc.path)}: {exc.message}"]
    return []


def validate_any(obj: dict[str, Any]) -> list[str]:
    """Route an object to the right validator by its apiVersion."""
    group = obj.get("apiVersion", "").rpartition("/")[0]
    if group == "modelwarden.io":
        return validate_custom_resource(obj)
    if (obj.get("apiVersion"), obj.get("kind")) in third_party_schemas():
        return validate_third_party(obj)
    return validate_builtin(obj)
