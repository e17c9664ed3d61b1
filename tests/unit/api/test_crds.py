"""The committed CRDs are exactly what the models generate, and the generated schemas are structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubestill.api.crd import all_crds, render

CRDS = Path(__file__).resolve().parents[3] / "crds"


@pytest.mark.parametrize("name", sorted(all_crds()))
def test_committed_crd_matches_models(name: str) -> None:
    path = CRDS / name
    assert path.exists(), f"{path} missing: run `kubestill crds`"
    assert path.read_text() == render(all_crds()[name]), f"{path} drifted from the models: run `kubestill crds`"


def _walk(node: Any, path: str) -> list[str]:
    problems = []
    if isinstance(node, dict):
        for banned in ("$ref", "anyOf", "oneOf", "allOf", "nullable", "title"):
            if banned in node:
                problems.append(f"{path}: {banned}")
        free_form = node.get("x-kubernetes-preserve-unknown-fields") or path == ".metadata"
        if node.get("type") == "object" and not {"properties", "additionalProperties"} & node.keys() and not free_form:
            problems.append(f"{path}: object without properties")
        if "type" not in node and path.count(".") > 1 and not path.endswith("x-kubernetes-validations"):
            problems.append(f"{path}: no type")
        for key, value in node.items():
            if key in ("properties",):
                for prop, sub in value.items():
                    problems += _walk(sub, f"{path}.{prop}")
            elif key in ("items", "additionalProperties") and isinstance(value, dict):
                problems += _walk(value, f"{path}[]")
    return problems


@pytest.mark.parametrize("name", sorted(all_crds()))
def test_schema_is_structural(name: str) -> None:
    schema = all_crds()[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(schema, "") == []


def test_every_field_has_a_description() -> None:
    missing = []

    def visit(node: dict[str, Any], path: str) -> None:
        for prop, sub in node.get("properties", {}).items():
            if prop not in ("metadata", "apiVersion", "kind") and not sub.get("description"):
                missing.append(f"{path}.{prop}")
            visit(sub, f"{path}.{prop}")
        if isinstance(node.get("items"), dict):
            visit(node["items"], f"{path}[]")

    for name, crd in all_crds().items():
        visit(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], name)
    assert missing == []


def test_names_and_columns() -> None:
    crds = {c["spec"]["names"]["kind"]: c for c in all_crds().values()}
    assert crds["DistillationJob"]["spec"]["names"]["shortNames"] == ["dj"]
    assert crds["StudentModel"]["spec"]["names"]["shortNames"] == ["sm"]
    assert crds["CanaryRollout"]["spec"]["names"]["shortNames"] == ["canary"]
    for crd in crds.values():
        version = crd["spec"]["versions"][0]
        assert crd["spec"]["names"]["categories"] == ["kubestill"]
        assert version["subresources"] == {"status": {}}
        assert {c["name"] for c in version["additionalPrinterColumns"]} >= {"Age"}
