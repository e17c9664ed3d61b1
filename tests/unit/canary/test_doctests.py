"""The worked examples in the canary docstrings are executed, so they cannot drift from the code."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from kubestill.api import names
from kubestill.builders import httproute, traefikservice
from kubestill.logic import analysis, canary, canary_route, canary_status, shadow_mirror


@pytest.mark.parametrize("module", [analysis, canary, canary_route, canary_status, shadow_mirror, httproute,
                                    traefikservice, names], ids=lambda m: m.__name__)
def test_docstring_examples(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0
