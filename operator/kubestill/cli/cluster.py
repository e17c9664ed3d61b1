"""How a production command (`kubestill status`, `kubestill rollout`) talks to the cluster: through
kubestill.clients.kube, the operator's own client and credentials readers (never the dev node's client), one
session per command; and the one line a user sees when the cluster cannot be reached.

Imported only by the commands that need it: aiohttp and kopf cost a noticeable start-up for `kubestill crds`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp

from kubestill.clients.kube import ApiError, KubeClient, NoCluster, connect

T = TypeVar("T")


def run(command: Callable[[KubeClient], Awaitable[T]]) -> T:
    """Run `command` with a client on the current kubeconfig (else the Pod's service account), closing its
    session after. Raises NoCluster, ApiError, or the transport error (see `error_line`)."""
    info = connect()

    async def with_client() -> T:
        api = KubeClient(info)
        try:
            return await command(api)
        finally:
            await api.close()

    return asyncio.run(with_client())


def error_line(exc: BaseException) -> str | None:
    """One line for an error reaching or answered by the cluster; None for anything else (a bug: traceback).

    >>> error_line(ApiError(404, "NotFound", 'canaryrollouts.kubestill.io "x" not found'))
    'canaryrollouts.kubestill.io "x" not found (HTTP 404)'
    >>> error_line(NoCluster("no cluster to talk to"))
    'no cluster to talk to'
    >>> error_line(TimeoutError())
    'cannot reach the API server: no answer in time'
    >>> error_line(KeyError("x")) is None
    True
    """
    if isinstance(exc, NoCluster):
        return str(exc)
    if isinstance(exc, ApiError):
        return f"{exc.message} (HTTP {exc.status})"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "cannot reach the API server: no answer in time"
    if isinstance(exc, aiohttp.ClientError | OSError):
        return "cannot reach the API server: " + " ".join(str(exc).split())
    return None
