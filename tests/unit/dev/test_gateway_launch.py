"""The pieces of kubestill.dev.gateway that must agree without a cluster: Traefik maps a Gateway listener to the
entryPoint with the same port, and serves only the GatewayClasses its label selector picks."""

from __future__ import annotations

from pathlib import Path

from kubestill.dev.gateway import (
    CONTROLLER_NAME,
    build_gateway,
    build_gateway_class,
    build_ready_objects,
    ready_host,
    traefik_argv,
)


def flags(argv: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in argv[1:])


def test_the_listener_port_is_the_web_entry_point_port() -> None:
    argv = traefik_argv(Path("/bin/traefik"), class_name="gw", host="127.0.0.1", web_port=18080, metrics_port=18081)
    gateway = build_gateway("gw", "ns", "gw", 18080)
    (listener,) = gateway["spec"]["listeners"]
    assert flags(argv)["entryPoints.web.address"] == f"127.0.0.1:{listener['port']}"
    assert listener["protocol"] == "HTTP" and listener["allowedRoutes"] == {"namespaces": {"from": "All"}}
    # Metrics and ping on their own entryPoint: no port of Traefik's defaults (8080) is taken.
    assert flags(argv)["entryPoints.metrics.address"] == "127.0.0.1:18081"
    assert flags(argv)["metrics.prometheus.entryPoint"] == flags(argv)["ping.entryPoint"] == "metrics"


def test_the_label_selector_picks_exactly_its_own_class() -> None:
    selector = flags(traefik_argv(Path("traefik"), class_name="gw-a", host="127.0.0.1", web_port=1,
                                  metrics_port=2))["providers.kubernetesgateway.labelSelector"]
    key, value = selector.split("=")
    own, other = build_gateway_class("gw-a"), build_gateway_class("gw-b")
    assert own["metadata"]["labels"][key] == value
    assert other["metadata"]["labels"][key] != value
    assert own["spec"] == {"controllerName": CONTROLLER_NAME} == {"controllerName": "traefik.io/gateway-controller"}
    assert build_gateway("gw-a", "ns", "gw-a", 1)["spec"]["gatewayClassName"] == own["metadata"]["name"]


def test_latency_buckets_resolve_milliseconds_and_nothing_phones_home() -> None:
    f = flags(traefik_argv(Path("traefik"), class_name="gw", host="127.0.0.1", web_port=1, metrics_port=2))
    buckets = [float(b) for b in f["metrics.prometheus.buckets"].split(",")]
    assert buckets == sorted(buckets) and buckets[0] <= 0.001 and sum(b <= 0.05 for b in buckets) >= 5
    assert f["global.checkNewVersion"] == f["global.sendAnonymousUsage"] == "false"
    assert f["providers.kubernetesgateway"] == f["providers.kubernetescrd"] == "true"


def test_the_readiness_route_goes_through_a_traefik_service_to_ping() -> None:
    """Ready means both providers are in force: the route (kubernetesgateway) names a TraefikService
    (kubernetescrd), which sends to Traefik's ping handler, served because the argv enables ping."""
    service, route = build_ready_objects("gw", "ns")
    (rule,) = route["spec"]["rules"]
    (backend,) = rule["backendRefs"]
    assert (backend["group"], backend["kind"], backend["name"]) == ("traefik.io", "TraefikService",
                                                                      service["metadata"]["name"])
    assert service["metadata"]["namespace"] == route["metadata"]["namespace"] == "ns"
    assert service["spec"]["weighted"]["services"] == [{"name": "ping@internal", "kind": "TraefikService"}]
    assert "--ping=true" in traefik_argv(Path("traefik"), class_name="gw", host="127.0.0.1", web_port=1,
                                         metrics_port=2)
    (parent,) = route["spec"]["parentRefs"]
    gateway = build_gateway("gw", "ns", "gw", 1)
    assert parent["name"] == gateway["metadata"]["name"]
    assert parent["sectionName"] == gateway["spec"]["listeners"][0]["name"]
    assert route["spec"]["hostnames"] == [ready_host("gw")] and ready_host("gw").endswith(".invalid")


def test_a_traefik_service_whose_mirror_has_no_endpoints_is_kept() -> None:
    """The rollout's judge may lose its Pod mid-rollout: Traefik must keep the TraefikService (main service
    serving) rather than drop it and the route (tests/realnode/test_canary_agreement.py shows both)."""
    f = flags(traefik_argv(Path("traefik"), class_name="gw", host="127.0.0.1", web_port=1, metrics_port=2))
    assert f["providers.kubernetescrd.allowEmptyServices"] == "true"
