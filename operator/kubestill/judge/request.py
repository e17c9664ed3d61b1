"""What the judge reads from a mirrored request besides its body: the segment it belongs to, and which headers
are passed on to the baseline and the candidate. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Hop-by-hop headers (RFC 9110 sec. 7.6.1) and what the HTTP client sets itself for the new connection.
_NOT_FORWARDED = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                            "trailer", "transfer-encoding", "upgrade", "host", "content-length"})


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The request's end-to-end headers, as the client sent them to the gateway.

    >>> forwarded_headers({"Host": "gw", "Content-Type": "application/json", "Connection": "keep-alive"})
    {'Content-Type': 'application/json'}
    """
    return {k: v for k, v in headers.items() if k.lower() not in _NOT_FORWARDED}


def segment_of(headers: Mapping[str, str], body: Any, header: str, field: str) -> str:
    """The request's segment: the `header` (when set and present), else `field` in the v2 request's
    `parameters`, in an OpenAI body's `metadata`, or at the top of the body; "" when none carries one.

    >>> segment_of({"X-Segment": "eu"}, {}, "X-Segment", "segment")
    'eu'
    >>> segment_of({}, {"inputs": [], "parameters": {"segment": "mobile"}}, "X-Segment", "segment")
    'mobile'
    >>> segment_of({}, {"messages": [], "metadata": {"segment": "b2b"}}, "X-Segment", "segment")
    'b2b'
    """
    if header:
        for key, value in headers.items():
            if key.lower() == header.lower() and value:
                return value
    if not field or not isinstance(body, Mapping):
        return ""
    for holder in (body.get("parameters"), body.get("metadata"), body):
        if isinstance(holder, Mapping) and isinstance(holder.get(field), str | int):
            return str(holder[field])
    return ""
