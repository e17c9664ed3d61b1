"""Traefik's TraefikService kind (traefik.io/v1alpha1), through which a CanaryRollout's shadow step mirrors on
Traefik: the names the builder (builders/traefikservice.py), the route builder and the client share. Source:
Traefik's CRDs (traefik-crds.yml in Traefik's module), "Kubernetes CRD > TraefikService" in Traefik's docs."""

from __future__ import annotations

TRAEFIK_GROUP = "traefik.io"
TRAEFIK_API_VERSION = f"{TRAEFIK_GROUP}/v1alpha1"
TRAEFIK_SERVICE_KIND = "TraefikService"
TRAEFIK_SERVICE_PLURAL = "traefikservices"
