"""Before kopf starts a peered replica: wait until its peering object exists.

kopf's keep-alive only patches an existing KopfPeering (ClusterKopfPeering when cluster-wide); a "not found" is
ignored until the next keep-alive, 50-55 s later. Replicas started before the object exists list nothing and stay
paused; when it appears, empty, each of them sees no peer and resumes, and all of them act until their next
keep-alive: two operators moving the same routes for up to a minute. Helm creates custom resources after the
Deployment, so with the chart this is a race between the Pods' start and Helm's last request. Waiting here makes
each replica's first keep-alive land, so the peers see each other before any of them resumes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from urllib.parse import quote

import aiohttp

from kubestill.clients.kube import ApiError, KubeClient, connect

log = logging.getLogger("kubestill.operator")

GLOB = set("*?[]!")  # kopf namespace patterns: which objects they mean is known only once kopf lists namespaces


def peering_paths(name: str, namespaces: Sequence[str]) -> list[str]:
    """The API paths of the peering objects kopf will keep alive: the ClusterKopfPeering `name` when cluster-wide
    (no namespaces), else the KopfPeering `name` in each namespace named literally (patterns are skipped)."""
    if not namespaces:
        return [f"/apis/kopf.dev/v1/clusterkopfpeerings/{quote(name)}"]
    return [f"/apis/kopf.dev/v1/namespaces/{quote(ns)}/kopfpeerings/{quote(name)}"
            for ns in namespaces if not GLOB & set(ns)]


async def wait_for_peering(client: KubeClient, paths: Sequence[str], every: float = 1.0,
                           say_every: float = 30.0) -> None:
    """Poll each path every `every` seconds until all exist, logging which are missing every `say_every` s.
    An answer other than 404 (e.g. 403) ends the wait for that object with a warning (kopf reports those itself);
    an unreachable API server is retried."""
    missing = list(paths)
    said = -say_every
    started = time.monotonic()
    while missing:
        still = []
        for path in missing:
            try:
                await client.request("GET", path)
            except ApiError as err:
                if err.status != 404:
                    log.warning("cannot read the peering object %s (%s); starting without waiting for it", path, err)
                    continue
                still.append(path)
            except (aiohttp.ClientError, OSError, TimeoutError) as err:  # the API server not reachable yet
                log.warning("cannot reach the API server for the peering object %s (%s); trying again", path, err)
                still.append(path)
        missing = still
        if not missing:
            break
        if time.monotonic() - said >= say_every:
            said = time.monotonic()
            log.info("waiting for the peering object %s (%.0f s so far): kopf's keep-alive needs it to exist, "
                     "or every replica would act until its next keep-alive", ", ".join(missing),
                     said - started)
        await asyncio.sleep(every)


async def wait_before_kopf(name: str, namespaces: Sequence[str]) -> None:
    """`kubestill operator` with a peering: wait_for_peering with the operator's own credentials."""
    client = KubeClient(connect())
    try:
        await wait_for_peering(client, peering_paths(name, namespaces))
    finally:
        await client.close()
