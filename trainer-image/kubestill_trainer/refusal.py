"""A gate of the spec refused the run: the trainer exits with `GATE_EXIT_CODE`, distinct from a crash (1) and a
bad config (2), and says why in one line. Gates: labeling.maxDroppedShare and data.maxBadRowShare (label stage),
the evaluation gates of kubestill.api.gates.judge (evaluate stage)."""

from __future__ import annotations

from kubestill.api.names import GATE_EXIT_CODE as GATE_EXIT_CODE  # the operator reads the same number


class GateRefusal(Exception):
    """The data or the student failed a gate of the spec; the message is the one-line reason."""
