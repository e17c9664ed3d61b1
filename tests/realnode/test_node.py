"""A real single-node cluster on this machine: the Node registers Ready with stamped versions, a plain Job
completes as a real Pod in containerd and its logs come back through the kubelet, Services reach Pods through
kube-proxy, and cluster DNS resolves Service names."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable

import pytest
import yaml

from kubestill.dev import realnode
from kubestill.dev.realnode import RealNode

from .conftest import describe_pods, get_json, wait_for

pytestmark = pytest.mark.realnode


CLIENT = """
import socket, sys, time, urllib.request
deadline = time.monotonic() + 60
while True:
    try:
        address = socket.gethostbyname("{fqdn}")
        body = urllib.request.urlopen("http://{fqdn}/", timeout=10).read().decode()
        break
    except OSError as err:
        if time.monotonic() > deadline:
            raise
        print("not yet:", repr(err), file=sys.stderr, flush=True)
        time.sleep(1)
print(address)
print(body)
"""


def job(name: str, image: str, code: str) -> dict[str, object]:
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": image, "imagePullPolicy": "Never",
                            "command": ["python3", "-c", code]}],
        }}},
    }


def finished(node: RealNode, namespace: str, name: str) -> str:
    conditions = get_json(node, "job", name, "-n", namespace).get("status", {}).get("conditions") or []
    return next((c["type"] for c in conditions if c["type"] in ("Complete", "Failed") and c["status"] == "True"), "")


def test_node_ready_with_stamped_versions(real_node: RealNode) -> None:
    node = get_json(real_node, "node", realnode.NODE_NAME)
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == info["kubeProxyVersion"] == "v1.36.3" or info["kubeletVersion"] == "v1.36.3"
    assert info["containerRuntimeVersion"].startswith("containerd://1.")
    assert {a["address"] for a in node["status"]["addresses"]} >= {realnode.NODE_IP}
    server = json.loads(real_node.cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert server["gitVersion"] == "v1.36.3"


def test_plain_job_completes_in_a_container(real_node: RealNode, namespace: str,
                                            loaded: Callable[[RealNode, str], str]) -> None:
    image = loaded(real_node, "operator")
    code = "import os, socket; print('hello from', socket.gethostname(), 'uid', os.getuid())"
    real_node.cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(job("hello", image, code)))
    state = wait_for(lambda: finished(real_node, namespace, "hello"), 120, "the Job to finish", interval=1)
    assert state == "Complete", describe_pods(real_node, namespace)
    pod = get_json(real_node, "pods", "-n", namespace, "-l", "job-name=hello")["items"][0]
    assert pod["spec"]["nodeName"] == realnode.NODE_NAME
    assert pod["status"]["podIP"].startswith("10.244.0.")
    # Logs travel API server -> kubelet (client certificate, webhook authorization) -> containerd.
    logs = real_node.cluster.kubectl("logs", "-n", namespace, "job/hello").stdout
    assert logs.startswith(f"hello from {pod['metadata']['name']} uid 65532"), logs


SERVER = """
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"served by a pod")
http.server.HTTPServer(("", 8080), H).serve_forever()
"""


def test_service_reached_by_name_from_a_pod_and_by_cluster_ip_from_the_host(
        real_node: RealNode, namespace: str, loaded: Callable[[RealNode, str], str]) -> None:
    image = loaded(real_node, "operator")
    web = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
           "spec": {"containers": [{"name": "web", "image": image, "imagePullPolicy": "Never",
                                    "command": ["python3", "-c", SERVER], "ports": [{"containerPort": 8080}],
                                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}
    real_node.cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all([web, service]))
    wait_for(lambda: real_node.cluster.kubectl("get", "endpointslices", "-n", namespace, "-l",
                                               "kubernetes.io/service-name=web", "-o",
                                               "jsonpath={.items[*].endpoints[*].conditions.ready}").stdout == "true",
             90, "the Service's endpoint to be ready", interval=1)

    # From a Pod: CoreDNS resolves the name, kube-proxy maps the ClusterIP to the Pod. A ready endpoint in the API
    # does not mean kube-proxy has written its rules yet (they follow the EndpointSlice asynchronously: a CI run
    # under load saw the first try fail within a second), so the client retries for a while, as any client of a
    # new Service must, and says why each try failed.
    fqdn = f"web.{namespace}.svc.cluster.local"
    code = CLIENT.format(fqdn=fqdn)
    real_node.cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(job("client", image, code)))
    state = wait_for(lambda: finished(real_node, namespace, "client"), 120, "the client Job", interval=1)
    assert state == "Complete", describe_pods(real_node, namespace)
    cluster_ip = get_json(real_node, "service", "web", "-n", namespace)["spec"]["clusterIP"]
    # The container log holds stderr too (the retries, if any): the answer is its last two lines.
    assert real_node.cluster.kubectl("logs", "-n", namespace, "job/client").stdout.strip().split("\n")[-2:] == [
        cluster_ip, "served by a pod"]

    # From the host, through the same ClusterIP.
    with urllib.request.urlopen(f"http://{cluster_ip}/", timeout=10) as resp:
        assert resp.read() == b"served by a pod"
