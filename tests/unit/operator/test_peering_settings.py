"""configure_peering: what kopf.run was told wins; KUBESTILL_PEERING decides only what it left undecided."""

from __future__ import annotations

import kopf
import pytest

from kubestill.handlers.lifecycle import configure_peering


def told(mandatory: str | None = None, standalone: bool | None = None) -> kopf.OperatorSettings:
    """Settings as kopf.run leaves them: a peering name makes it mandatory; --standalone sets standalone."""
    settings = kopf.OperatorSettings()
    if mandatory is not None:
        settings.peering.name, settings.peering.mandatory = mandatory, True
    if standalone is not None:
        settings.peering.standalone = standalone
    return settings


@pytest.mark.parametrize(("settings", "variable", "expected"), [
    # (name, mandatory, standalone) after the start-up activity
    (told(mandatory="flagged"), "", ("flagged", True, False)),  # --peering without the variable
    (told(mandatory="flagged"), "other", ("flagged", True, False)),  # the flag wins
    (told(standalone=True), "replicas", ("default", False, True)),  # --standalone with the variable
    (told(), "replicas", ("replicas", True, False)),  # kopf run -m kubestill.main, the variable set
    (told(), "", ("default", False, True)),  # nothing anywhere: standalone, no "default" peering by chance
])
def test_configure_peering(settings: kopf.OperatorSettings, variable: str, expected: tuple[str, bool, bool]) -> None:
    configure_peering(settings, variable)
    assert (settings.peering.name, settings.peering.mandatory, settings.peering.standalone) == expected
