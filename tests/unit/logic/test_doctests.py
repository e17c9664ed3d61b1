"""The worked examples in the sequential tests' docstrings are executed, so they cannot drift from the code."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from kubestill.logic import sequential, sequential_design


@pytest.mark.parametrize("module", [sequential, sequential_design], ids=lambda m: m.__name__)
def test_docstring_examples(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0
