"""Every CEL rule of the CRDs has an invalid object in tests/invalid_objects.py that trips it.

A rule with a Python check must be tripped by a CASE, seen here through the Python models; the same CASE runs
against the real API server in tests/integration/test_crds.py. A transition rule (`oldSelf`, no Python check)
must have a TRANSITION, which only the API server can judge. Adding a rule without a case fails here."""

from __future__ import annotations

from collections import Counter
from functools import cache

import pytest
from pydantic import BaseModel, ValidationError

from kubestill.api.crd import all_crds
from kubestill.api.v1alpha1 import CanaryRollout, DistillationJob, KubeModel, Rule, StudentModel
from tests.invalid_objects import CASES, TRANSITIONS

MODELS: dict[str, type[BaseModel]] = {
    "DistillationJob": DistillationJob,
    "StudentModel": StudentModel,
    "CanaryRollout": CanaryRollout,
}


def _crd_rule_texts() -> set[str]:
    """The `rule` of every x-kubernetes-validations entry in the generated CRDs."""
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for rule in node.get("x-kubernetes-validations", []):
                found.add(rule["rule"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(all_crds())
    return found


def _models_with_rules() -> list[type[KubeModel]]:
    found: list[type[KubeModel]] = []
    stack: list[type[KubeModel]] = [KubeModel]
    while stack:
        for sub in stack.pop().__subclasses__():
            stack.append(sub)
            if sub.rules:
                found.append(sub)
    return found


def _rules() -> list[tuple[str, Rule]]:
    in_crds = _crd_rule_texts()
    return [(f"{model.__name__}.{rule.field or '.'}:{rule.message[:40]}", rule)
            for model in _models_with_rules() for rule in model.rules if rule.cel in in_crds]


@cache
def _python_messages() -> dict[str, tuple[str, ...]]:
    """Case id -> the messages of the errors the Python models raise for it."""
    out = {}
    for case in CASES:
        obj = case.build()
        try:
            MODELS[obj["kind"]].model_validate(obj)
            out[case.id] = ()
        except ValidationError as err:
            out[case.id] = tuple(str(e["msg"]) for e in err.errors())
    return out


RULES = _rules()


def test_every_crd_rule_comes_from_a_model() -> None:
    assert {rule.cel for _, rule in RULES} == _crd_rule_texts()


@pytest.mark.parametrize("rule", [r for _, r in RULES], ids=[i for i, _ in RULES])
def test_rule_has_an_invalid_object(rule: Rule) -> None:
    if rule.check is None:
        hits = [t.id for t in TRANSITIONS if t.words in rule.message and t.field.endswith(rule.field or "")]
        assert hits, f"transition rule {rule.message!r} has no TRANSITION in tests/invalid_objects.py"
        return
    # A message shared by several models (pause bounds of steps and of the shadow) needs a case for each.
    wanted = Counter(r.message for _, r in RULES)[rule.message]
    hits = [c for c in CASES if any(rule.message in m for m in _python_messages()[c.id])]
    assert len({c.field for c in hits}) >= wanted, (
        f"rule {rule.message!r} is tripped by {[c.id for c in hits]}, needs {wanted} case(s) at distinct fields: "
        "add an invalid object to tests/invalid_objects.py CASES"
    )
    # The API server's message is the rule's message: the case's words must be part of it. A rule that names the
    # offending value says it through its messageExpression (the API server) and `explain` (Python), which
    # tests/integration/test_crds.py shows to agree: there the words must be part of what Python said.
    if rule.explain is not None:
        assert any(c.words in m for c in hits for m in _python_messages()[c.id]), [c.words for c in hits]
    else:
        assert any(c.words in rule.message for c in hits), [c.words for c in hits]
