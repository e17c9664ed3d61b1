"""Which teacher layer each student layer imitates (hidden-mse and attention-mse share it)."""

from __future__ import annotations


def default_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Evenly spaced teacher layers, 1-based, last student layer -> last teacher layer.

    E.g. 2 student layers of a 6-layer teacher -> [3, 6]; 6 of 6 -> [1, ..., 6].
    """
    if student_layers < 1 or teacher_layers < 1:
        raise ValueError("layer counts must be positive")
    return [round((i + 1) * teacher_layers / student_layers) for i in range(student_layers)]


def resolve_layer_map(given: list[int], student_layers: int, teacher_layers: int, loss: str) -> list[int]:
    """`layerMap` from the spec (1-based teacher layers, one per student layer), checked, or the default."""
    if not given:
        return default_layer_map(student_layers, teacher_layers)
    if len(given) != student_layers:
        raise ValueError(f"{loss}: layerMap lists {len(given)} layers but the student has {student_layers}")
    bad = [x for x in given if not 1 <= x <= teacher_layers]
    if bad:
        raise ValueError(f"{loss}: layerMap entries {bad} are not teacher layers 1..{teacher_layers}")
    return list(given)
