"""The PyPI `kubernetes` client against a keelson API server.

Usage: client_e2e.py KUBECONFIG NAMESPACE
Exits non-zero (with the assertion that failed) unless every check holds.
"""
import json
import sys
import tempfile

from kubernetes import client, config, utils, watch
from kubernetes.client.rest import ApiException

kubeconfig, ns = sys.argv[1], sys.argv[2]
config.load_kube_config(config_file=kubeconfig)
api = client.ApiClient()
v1 = client.CoreV1Api(api)

v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))

# --- watch from an old resourceVersion, with a timeout ---------------------------
rv = v1.list_namespaced_config_map(ns).metadata.resource_version
cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="w", labels={"t": "watch"}), data={"a": "1"})
v1.create_namespaced_config_map(ns, cm)
v1.patch_namespaced_config_map("w", ns, {"data": {"a": "2"}})
v1.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="w2", labels={"t": "watch"})))
v1.delete_collection_namespaced_config_map(ns, label_selector="t=watch")
seen = []
for ev in watch.Watch().stream(v1.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=5):
    seen.append((ev["type"], ev["object"].metadata.name))
assert seen == [("ADDED", "w"), ("MODIFIED", "w"), ("ADDED", "w2"), ("DELETED", "w"), ("DELETED", "w2")], seen

# --- ConfigMap CRUD with every patch type ---------------------------------------
made = v1.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"), data={"a": "1"}))
assert made.metadata.uid and made.metadata.resource_version
got = v1.read_namespaced_config_map("c", ns)
assert got.data == {"a": "1"}
v1.patch_namespaced_config_map("c", ns, {"data": {"b": "2"}})  # strategic merge patch
v1.patch_namespaced_config_map("c", ns, [{"op": "add", "path": "/data/c", "value": "3"}])  # JSON patch
v1.patch_namespaced_config_map("c", ns, {"data": {"a": None}}, _content_type="application/merge-patch+json")
got = v1.read_namespaced_config_map("c", ns)
assert got.data == {"b": "2", "c": "3"}, got.data
got.data["d"] = "4"
replaced = v1.replace_namespaced_config_map("c", ns, got)
assert int(replaced.metadata.resource_version) > int(got.metadata.resource_version)

# --- exact conflict errors --------------------------------------------------------
try:
    v1.replace_namespaced_config_map("c", ns, got)  # got's resourceVersion is stale now
    raise AssertionError("a stale replace succeeded")
except ApiException as e:
    assert e.status == 409, e.status
    assert e.body == json.dumps({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'Operation cannot be fulfilled on configmaps "c": the object has been modified; please apply your changes to the latest version and try again',
        "reason": "Conflict", "details": {"name": "c", "kind": "configmaps"}, "code": 409,
    }, separators=(",", ":")), e.body
try:
    v1.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c")))
    raise AssertionError("a duplicate create succeeded")
except ApiException as e:
    assert e.status == 409 and json.loads(e.body)["reason"] == "AlreadyExists", e.body
try:
    v1.read_namespaced_config_map("nope", ns)
    raise AssertionError("reading a missing object succeeded")
except ApiException as e:
    assert e.status == 404 and json.loads(e.body)["message"] == 'configmaps "nope" not found', e.body
v1.delete_namespaced_config_map("c", ns)

# --- Service CRUD --------------------------------------------------------------
svc = client.V1Service(
    metadata=client.V1ObjectMeta(name="s"),
    spec=client.V1ServiceSpec(cluster_ip="10.96.0.20", selector={"app": "x"}, ports=[client.V1ServicePort(port=80)]),
)
v1.create_namespaced_service(ns, svc)
got = v1.read_namespaced_service("s", ns)
assert got.spec.ports[0].target_port == 80 and got.spec.session_affinity == "None", got.spec
assert got.spec.cluster_ip == "10.96.0.20" and got.spec.cluster_ips == ["10.96.0.20"], got.spec
# The address is held: another Service asking for it is refused with Kubernetes' words.
try:
    v1.create_namespaced_service(ns, client.V1Service(metadata=client.V1ObjectMeta(name="s2"), spec=svc.spec))
    raise AssertionError("a second Service got the same ClusterIP")
except ApiException as e:
    assert e.status == 422 and "provided IP is already allocated" in json.loads(e.body)["message"], e.body
v1.patch_namespaced_service("s", ns, {"spec": {"ports": [{"port": 80, "name": "http"}]}})
got = v1.read_namespaced_service("s", ns)
assert [p.name for p in got.spec.ports] == ["http"] and got.spec.ports[0].protocol == "TCP", got.spec.ports
v1.delete_namespaced_service("s", ns)
# Released on delete: the address can be had again.
v1.create_namespaced_service(ns, client.V1Service(metadata=client.V1ObjectMeta(name="s2"), spec=svc.spec))
v1.delete_namespaced_service("s2", ns)
# NodePort: allocated from 30000-32767, and the kubernetes Service holds the first address.
np = v1.create_namespaced_service(ns, client.V1Service(
    metadata=client.V1ObjectMeta(name="np"),
    spec=client.V1ServiceSpec(type="NodePort", selector={"app": "x"}, ports=[client.V1ServicePort(port=80)])))
assert 30000 <= np.spec.ports[0].node_port <= 32767, np.spec.ports
assert np.spec.cluster_ip.startswith("10.") and np.spec.cluster_ip != "10.96.0.1", np.spec.cluster_ip
v1.delete_namespaced_service("np", ns)
k = v1.read_namespaced_service("kubernetes", "default")
assert k.spec.cluster_ip == "10.96.0.1" and k.spec.ports[0].port == 443, k.spec

# --- ReplicationController CRUD, scale --------------------------------------------
rc = client.V1ReplicationController(
    metadata=client.V1ObjectMeta(name="rc"),
    spec=client.V1ReplicationControllerSpec(
        replicas=1, selector={"app": "rc"},
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "rc"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
        ),
    ),
)
v1.create_namespaced_replication_controller(ns, rc)
v1.patch_namespaced_replication_controller_scale("rc", ns, {"spec": {"replicas": 3}})
got = v1.read_namespaced_replication_controller("rc", ns)
assert got.spec.replicas == 3 and got.metadata.generation == 2, (got.spec.replicas, got.metadata.generation)
assert v1.read_namespaced_replication_controller_scale("rc", ns).spec.replicas == 3
v1.delete_namespaced_replication_controller("rc", ns)

# --- create_from_yaml with a multi-document file ------------------------------------
with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
    f.write(f"""apiVersion: v1
kind: ConfigMap
metadata: {{name: y1, namespace: {ns}}}
data: {{k: v}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: y2, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: y2}}}}
  template:
    metadata: {{labels: {{app: y2}}}}
    spec:
      containers: [{{name: c, image: busybox}}]
""")
utils.create_from_yaml(api, f.name)
assert v1.read_namespaced_config_map("y1", ns).data == {"k": "v"}
d = client.AppsV1Api(api).read_namespaced_deployment("y2", ns)
assert d.spec.replicas == 1 and d.spec.strategy.type == "RollingUpdate", d.spec
names = sorted(i.metadata.name for i in v1.list_namespaced_config_map(ns, field_selector="metadata.name=y1").items)
assert names == ["y1"], names

print("python client: all checks passed")
