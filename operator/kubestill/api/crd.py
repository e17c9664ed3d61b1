"""Generate CustomResourceDefinitions from the pydantic models.

The models are the single source of truth: pydantic's JSON Schema is rewritten into a structural OpenAPI v3
schema (no $ref, no anyOf, no nulls), each model's `rules` become `x-kubernetes-validations`, and the kind's
module supplies plural, short names and printer columns. `kubestill crds` writes the result; a unit test
fails when the committed `crds/` drift from it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import yaml

from .v1alpha1 import CATEGORY, GROUP, KIND_MODULES, VERSION, KubeModel

_DROP = {"title", "examples", "additionalProperties", "$defs"}
_KEEP_SCALAR = {"description", "pattern", "minLength", "maxLength", "minItems", "maxItems", "format", "enum"}


def _all_models() -> dict[str, type[KubeModel]]:
    found: dict[str, type[KubeModel]] = {}
    stack: list[type[KubeModel]] = [KubeModel]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            found[sub.__name__] = sub
            stack.append(sub)
    return found


class _Converter:
    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs
        self.models = _all_models()

    def convert(self, node: dict[str, Any]) -> dict[str, Any]:
        node = dict(node)
        if "$ref" in node:
            name = node.pop("$ref").rsplit("/", 1)[-1]
            target = self.convert(self.defs[name])
            if name in self.models and "description" in node:
                target.pop("description", None)
            target.update({k: v for k, v in self.convert_siblings(node).items() if v is not None})
            return target
        if "anyOf" in node:
            branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
            if len(branches) != 1:
                raise ValueError(f"unions are not structural: {branches}")
            merged = self.convert(branches[0])
            merged.update(self.convert_siblings(node))
            return merged
        if "allOf" in node and len(node["allOf"]) == 1:
            merged = self.convert(node.pop("allOf")[0])
            merged.update(self.convert_siblings(node))
            return merged
        return self.convert_plain(node)

    def convert_siblings(self, node: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if node.get("description"):
            out["description"] = node["description"]
        if node.get("default") is not None:
            out["default"] = node["default"]
        return out

    def convert_plain(self, node: dict[str, Any]) -> dict[str, Any]:
        out = _scalars(node)
        kind = node.get("type")
        if kind == "object":
            out.update(self.convert_object(node))
        if kind == "array":
            out["items"] = self.convert(node["items"])
        if kind == "string" and node.get("format") == "date-time":
            out["format"] = "date-time"
        return out

    def convert_object(self, node: dict[str, Any]) -> dict[str, Any]:
        """properties (with required and the model's rules), a typed map, or a free-form map."""
        properties = node.get("properties")
        extra = node.get("additionalProperties")
        if properties is None:
            if isinstance(extra, dict):
                return {"additionalProperties": self.convert(extra)}
            # A free-form map (object metadata): the only place unknown fields are kept on purpose.
            return {"x-kubernetes-preserve-unknown-fields": True}
        out: dict[str, Any] = {"properties": {k: self.convert(v) for k, v in properties.items()}}
        if node.get("required"):
            out["required"] = sorted(node["required"])
        rules = self.rules_for(node)
        if rules:
            out["x-kubernetes-validations"] = rules
        return out

    def rules_for(self, node: dict[str, Any]) -> list[dict[str, str]]:
        model = self.models.get(node.get("title", ""))
        if model is None:
            return []
        return [rule.to_crd() for rule in model.rules]


def _scalars(node: dict[str, Any]) -> dict[str, Any]:
    """The type and the scalar constraints of a JSON Schema node, in OpenAPI v3.0 terms."""
    out: dict[str, Any] = {}
    kind = node.get("type")
    if "const" in node:
        out.update(type="string", enum=[node["const"]])
    elif kind is not None:
        out["type"] = kind
    elif "enum" in node:
        out["type"] = "string"
    for key, value in node.items():
        if key in _KEEP_SCALAR or key in ("minimum", "maximum"):
            out[key] = value
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            # JSON Schema 2020 states the bound; OpenAPI v3.0 (what Kubernetes reads) flags it.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "default" and value is not None:
            out["default"] = value
    return out


def schema_for(kind_module: ModuleType) -> dict[str, Any]:
    """The openAPIV3Schema of one kind."""
    root: type[KubeModel] = getattr(kind_module, kind_module.KIND)
    raw = root.model_json_schema(by_alias=True)
    converter = _Converter(raw.get("$defs", {}))
    props = raw["properties"]
    return {
        "type": "object",
        "description": raw.get("description", ""),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": props["apiVersion"]["description"]},
            "kind": {"type": "string", "description": props["kind"]["description"]},
            "metadata": {"type": "object"},
            "spec": converter.convert(props["spec"]),
            "status": converter.convert(props["status"]),
        },
    }


def build_crd(kind_module: ModuleType) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind, as a manifest dict."""
    kind: str = kind_module.KIND
    plural: str = kind_module.PLURAL
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "kubestill"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": list(kind_module.SHORT_NAMES),
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(kind_module.PRINTER_COLUMNS),
                    "schema": {"openAPIV3Schema": schema_for(kind_module)},
                }
            ],
        },
    }


def all_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD manifest for every kind, as `kubestill crds` writes them."""
    return {f"{GROUP}_{m.PLURAL}.yaml": build_crd(m) for m in KIND_MODULES}


def render(crd: dict[str, Any]) -> str:
    """Stable YAML text of a manifest (key order kept, no aliases)."""

    class _NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    header = "# Generated by `kubestill crds` from kubestill.api.v1alpha1. Do not edit.\n"
    return header + yaml.dump(crd, Dumper=_NoAliases, sort_keys=False, width=120)
