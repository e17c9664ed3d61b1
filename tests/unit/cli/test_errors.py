"""Failed Kubernetes calls reach the user as the API server's message, not a traceback."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException

from kubestill.cli import api_error_message


def _api_error(status: int, body: dict[str, object] | None, reason: str) -> ApiException:
    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps(body) if body is not None else None
    return exc


@pytest.mark.parametrize(
    ("exc", "want"),
    [
        (_api_error(404, {"message": 'canaryrollouts.kubestill.io "x" not found'}, "Not Found"),
         'canaryrollouts.kubestill.io "x" not found (HTTP 404)'),
        (_api_error(403, None, "Forbidden"), "Forbidden (HTTP 403)"),
        (ValueError("not an API error"), None),
    ],
)
def test_api_error_message(exc: BaseException, want: str | None) -> None:
    assert api_error_message(exc) == want
