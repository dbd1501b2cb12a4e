#!/usr/bin/python3
"""Checks deploy/kubernetes (CTest deploy_kubernetes_manifests, label deploy).

1. `kubectl kustomize` renders deploy/kubernetes and deploy/kubernetes/monitoring (with the
   kubectl given: Debian's kubernetes-client 1.20, kustomize v2.0.3).
2. Every core object is checked against the Kubernetes API models of python3-kubernetes:
   each key must be a field of its model (unknown fields fail, with their path), and the
   ApiClient must deserialize it (required fields present).
3. The Prometheus Operator objects (CRDs: no offline schema) are checked structurally.
4. References agree: Service targetPorts are container ports of the pods it selects, the
   monitors select existing objects and name existing ports, every volumeMount has a
   volume, binaries are where docker/Dockerfile installs them, the --config file is a key
   of the mounted ConfigMap, `steadyeval-server --check` accepts it, its paths lie under
   the container's mounts, worker flags exist, the probes run `steadyeval-server health`
   against the gRPC port, images are built by docker/, the Secrets are documented, and
   the dashboards ConfigMap holds every file of deploy/grafana/dashboards.
Prints every problem found and exits 1 if there is any.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml
from kubernetes import client

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docker"))
from check_container_files import dockerfile_instructions  # noqa: E402 (after the path)

errors = []
SERVER_BIN = None  # --server_bin


def error(msg):
    errors.append(msg)


def render(kubectl, path):
    r = subprocess.run([kubectl, "kustomize", path], capture_output=True, text=True)
    if r.returncode != 0:
        error(f"`{kubectl} kustomize {path}` failed: {r.stderr.strip()}")
        return []
    return [d for d in yaml.safe_load_all(r.stdout) if d]


# --- 2. strict model check -------------------------------------------------------------
CORE_MODELS = {("v1", "Service"): "V1Service", ("v1", "ConfigMap"): "V1ConfigMap",
               ("apps/v1", "StatefulSet"): "V1StatefulSet",
               ("apps/v1", "Deployment"): "V1Deployment"}


def check_model(value, type_name, where):
    """Every key of `value` must be an attribute of the model `type_name` (recursively)."""
    if type_name.startswith("list["):
        if not isinstance(value, list):
            return error(f"{where}: expected a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            check_model(item, type_name[5:-1], f"{where}[{i}]")
        return
    if type_name.startswith("dict("):
        if not isinstance(value, dict):
            return error(f"{where}: expected a map, got {type(value).__name__}")
        inner = type_name[type_name.index(",") + 1:-1].strip()
        for k, v in value.items():
            check_model(v, inner, f"{where}.{k}")
        return
    model = getattr(client, type_name, None)
    if model is None:  # str, int, bool, object, datetime: a leaf
        if type_name == "str" and not isinstance(value, str):
            error(f"{where}: expected a string, got {value!r}")
        if type_name == "int" and (not isinstance(value, int) or isinstance(value, bool)):
            error(f"{where}: expected an integer, got {value!r}")
        if type_name == "bool" and not isinstance(value, bool):
            error(f"{where}: expected true/false, got {value!r}")
        return
    if not isinstance(value, dict):
        return error(f"{where}: expected a {type_name} object, got {value!r}")
    by_json = {j: a for a, j in model.attribute_map.items()}
    for key, v in value.items():
        if key not in by_json:
            error(f"{where}.{key}: unknown field of {type_name} "
                  f"(known: {', '.join(sorted(by_json))})")
            continue
        check_model(v, model.openapi_types[by_json[key]], f"{where}.{key}")


def check_core(obj):
    name = f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}"
    model = CORE_MODELS.get((obj.get("apiVersion"), obj.get("kind")))
    if model is None:
        return error(f"{name}: apiVersion {obj.get('apiVersion')} kind {obj.get('kind')} is "
                     f"not one this check knows; add it to CORE_MODELS")
    check_model(obj, model, name)
    try:  # required fields (client-side validation of the model constructors)
        api = client.ApiClient()
        api._ApiClient__deserialize(obj, model)
    except (ValueError, TypeError) as e:
        error(f"{name}: does not deserialize as {model}: {e}")


# --- 3. monitoring CRs -----------------------------------------------------------------
MONITOR_KEYS = {
    "ServiceMonitor": ("endpoints", {"port", "path", "interval", "scheme", "tlsConfig",
                                     "scrapeTimeout", "relabelings", "metricRelabelings"}),
    "PodMonitor": ("podMetricsEndpoints", {"port", "path", "interval", "scheme", "tlsConfig",
                                           "scrapeTimeout", "relabelings",
                                           "metricRelabelings"}),
}


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def check_monitor(obj, core):
    kind = obj.get("kind")
    name = f"{kind} {obj.get('metadata', {}).get('name')}"
    if obj.get("apiVersion") != "monitoring.coreos.com/v1" or kind not in MONITOR_KEYS:
        return error(f"{name}: expected apiVersion monitoring.coreos.com/v1 and kind "
                     f"ServiceMonitor or PodMonitor")
    list_key, endpoint_keys = MONITOR_KEYS[kind]
    spec = obj.get("spec", {})
    unknown = set(spec) - {"selector", list_key, "namespaceSelector", "jobLabel",
                           "podTargetLabels", "targetLabels"}
    if unknown:
        error(f"{name}: unknown spec fields {sorted(unknown)}")
    selector = spec.get("selector", {}).get("matchLabels")
    if not selector:
        return error(f"{name}: spec.selector.matchLabels is missing")
    if kind == "ServiceMonitor":
        targets = [(o["metadata"].get("labels", {}), [p.get("name") for p in o["spec"]["ports"]])
                   for o in core if o["kind"] == "Service"]
    else:
        targets = [(o["spec"]["template"]["metadata"].get("labels", {}),
                    [p.get("name") for c in o["spec"]["template"]["spec"]["containers"]
                     for p in c.get("ports", [])])
                   for o in core if o["kind"] in ("Deployment", "StatefulSet")]
    selected = [ports for labels, ports in targets if labels_match(selector, labels)]
    if not selected:
        return error(f"{name}: selector {selector} matches no "
                     f"{'Service' if kind == 'ServiceMonitor' else 'pod template'}")
    endpoints = spec.get(list_key)
    if not endpoints:
        return error(f"{name}: spec.{list_key} is empty")
    for i, ep in enumerate(endpoints):
        if set(ep) - endpoint_keys:
            error(f"{name}: spec.{list_key}[{i}] unknown fields {sorted(set(ep) - endpoint_keys)}")
        if not all(ep.get("port") in ports for ports in selected):
            error(f"{name}: spec.{list_key}[{i}].port {ep.get('port')!r} is not a port name of "
                  f"every object it selects ({selected})")


# --- 4. references ---------------------------------------------------------------------
def flag_names(source):
    return set(re.findall(r'^\s*\{"([a-z0-9_]+)", (?:true|false)', open(source).read(), re.M))


def docker_bin_dirs(repo):
    """Folders docker/Dockerfile puts the steadyeval binaries in: PREFIX/bin of every
    `cmake --install ... --prefix PREFIX`, and the target of a COPY naming a binary."""
    dirs = set()
    for op, words, line in dockerfile_instructions(os.path.join(repo, "docker", "Dockerfile")):
        for prefix in re.findall(r"cmake --install\s+\S+\s+--prefix\s+(\S+)", line):
            dirs.add(prefix.rstrip("/") + "/bin")
        if op == "COPY" and any("steadyeval-server" in w for w in words):
            dirs.add(words[-1].rstrip("/"))
    return dirs


def docker_images(repo):
    """Image names docker/ documents building (`docker build ... -t NAME`)."""
    names = set()
    for f in os.listdir(os.path.join(repo, "docker")):
        text = open(os.path.join(repo, "docker", f)).read()
        names |= {n.split(":")[0] for n in re.findall(r"docker build[^\n]*-t\s+(\S+)", text)}
    return names


def under_mount(path, mounts):
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts)


def check_pod(obj, configmaps, repo, bin_dirs, images, server_flags, worker_flags, services):
    name = f"{obj['kind']} {obj['metadata']['name']}"
    spec = obj["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for t in obj["spec"].get("volumeClaimTemplates", []):
        volumes[t["metadata"]["name"]] = {"pvc": True}
    for c in spec["containers"]:
        where = f"{name} container {c['name']}"
        image = c["image"].split(":")[0]
        if image not in images:
            error(f"{where}: image {c['image']} is not built by docker/ (images: {sorted(images)})")
        mounts = {}
        for m in c.get("volumeMounts", []):
            if m["name"] not in volumes:
                error(f"{where}: volumeMount {m['name']} has no volume")
            mounts[m["mountPath"]] = m
        for m in mounts.values():
            v = volumes.get(m["name"], {})
            claim = v.get("persistentVolumeClaim", {})
            if m["mountPath"] == "/checkpoints" and not (m.get("readOnly") and claim.get("readOnly")):
                error(f"{where}: the checkpoint volume must be mounted read-only")
        cmd = c.get("command", [])
        if not cmd or os.path.dirname(cmd[0]) not in bin_dirs:
            error(f"{where}: command {cmd[:1]} is not in the image's binary folder {sorted(bin_dirs)}")
        binary = os.path.basename(cmd[0]) if cmd else ""
        flags = {"steadyeval-server": server_flags, "steadyeval-worker": worker_flags}.get(binary)
        if flags is None:
            error(f"{where}: unexpected binary {binary}")
            continue
        for word in cmd[1:]:
            if word.startswith("--") and word[2:] not in flags:
                error(f"{where}: {binary} has no flag {word}")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        if binary == "steadyeval-server":
            check_coordinator(where, c, cmd, mounts, volumes, configmaps, ports, bin_dirs,
                              server_flags, services)
        for flag in ("--token_file", "--ca_cert", "--cache_dir"):
            if flag in cmd and not under_mount(cmd[cmd.index(flag) + 1], mounts):
                error(f"{where}: {flag} {cmd[cmd.index(flag) + 1]} is not under a volumeMount")
    return spec


def check_coordinator(where, c, cmd, mounts, volumes, configmaps, ports, bin_dirs, server_flags,
                      services):
    if "--config" not in cmd:
        return error(f"{where}: the coordinator is not started with --config")
    path = cmd[cmd.index("--config") + 1]
    folder, key = os.path.split(path)
    m = mounts.get(folder)
    cm = volumes.get(m["name"], {}).get("configMap", {}).get("name") if m else None
    if cm not in configmaps or key not in configmaps[cm]:
        return error(f"{where}: --config {path} is not a key of a ConfigMap mounted at {folder}")
    config = yaml.safe_load(configmaps[cm][key]) or {}
    check_config_with_server(f"ConfigMap {cm} {key}", configmaps[cm][key])
    for k in ("tls_cert", "tls_key", "tokens_file", "client_ca"):
        if k in config and not under_mount(config[k], mounts):
            error(f"ConfigMap {cm} {key}: {k} {config[k]} is not under a volumeMount of {where}")
    for root in str(config.get("source_roots", "")).split(","):
        if root and not root.startswith("s3://") and not under_mount(root, mounts):
            error(f"ConfigMap {cm} {key}: source root {root} is not mounted in {where}")
    if "data_dir" not in config or not under_mount(config["data_dir"], {
            p for p, mm in mounts.items() if volumes.get(mm["name"], {}).get("pvc")}):
        error(f"ConfigMap {cm} {key}: data_dir must be the volumeClaimTemplates mount")
    grpc_port = str(config.get("listen", "")).rsplit(":", 1)[-1]
    if str(ports.get("grpc")) != grpc_port:
        error(f"{where}: container port grpc {ports.get('grpc')} is not listen's port {grpc_port}")
    metrics_port = str(config.get("metrics_listen", "")).rsplit(":", 1)[-1]
    if str(ports.get("metrics")) != metrics_port:
        error(f"{where}: container port metrics {ports.get('metrics')} is not metrics_listen's "
              f"port {metrics_port}")
    for probe in ("readinessProbe", "livenessProbe"):
        p = c.get(probe, {}).get("exec", {}).get("command", [])
        if len(p) < 4 or os.path.basename(p[0]) != "steadyeval-server" or \
                os.path.dirname(p[0]) not in bin_dirs or p[1:3] != ["health", "--server"]:
            error(f"{where}: {probe} must run <bin>/steadyeval-server health --server ...: {p}")
            continue
        if p[3].rsplit(":", 1)[-1] != grpc_port:
            error(f"{where}: {probe} checks port {p[3]}, not the gRPC port {grpc_port}")
        if "tls_cert" in config and "--ca_cert" not in p:
            error(f"{where}: {probe}: TLS is on but the probe has no --ca_cert")
        if "--tls_server_name" in p and p[p.index("--tls_server_name") + 1] not in services:
            error(f"{where}: {probe}: --tls_server_name is not the coordinator's Service "
                  f"name {sorted(services)} (the name its certificate carries)")
        if "--ca_cert" in p and not under_mount(p[p.index("--ca_cert") + 1], mounts):
            error(f"{where}: {probe}: --ca_cert is not under a volumeMount")


def check_config_with_server(what, text):
    """The config as the coordinator reads it: `steadyeval-server --check` (keys, value types,
    declared runs). Its source_roots name the pod's mounts, absent here: a temp folder
    stands in for them."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "steadyeval.yaml")
        with open(path, "w") as f:
            f.write(text)
        r = subprocess.run([SERVER_BIN, "--check", "--config", path, "--source_roots", tmp],
                           capture_output=True, text=True)
        if r.returncode != 0:
            error(f"{what}: steadyeval-server --check refuses it: "
                  f"{(r.stderr or r.stdout).strip()}")


def check_references(core, repo, readme):
    bin_dirs = docker_bin_dirs(repo)
    images = docker_images(repo)
    server_flags = flag_names(os.path.join(repo, "server", "config", "server_flags.cc"))
    worker_flags = flag_names(os.path.join(repo, "worker", "daemon", "main.cc"))
    configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in core if o["kind"] == "ConfigMap"}
    pods = {}
    for o in core:
        if o["kind"] in ("Deployment", "StatefulSet"):
            services = {s["metadata"]["name"] for s in core if s["kind"] == "Service" and
                        labels_match(s["spec"]["selector"],
                                     o["spec"]["template"]["metadata"].get("labels", {}))}
            pods[o["metadata"]["name"]] = check_pod(o, configmaps, repo, bin_dirs, images,
                                                   server_flags, worker_flags, services)
            for v in o["spec"]["template"]["spec"].get("volumes", []):
                secret = v.get("secret", {}).get("secretName")
                if secret and not re.search(r"kubectl create secret \S+ " + re.escape(secret) + r"\b",
                                            readme):
                    error(f"{o['metadata']['name']}: Secret {secret} has no `kubectl create "
                          f"secret` in deploy/kubernetes/README.md")
    for s in (o for o in core if o["kind"] == "Service"):
        sel = s["spec"]["selector"]
        matched = [o for o in core if o["kind"] in ("Deployment", "StatefulSet")
                   and labels_match(sel, o["spec"]["template"]["metadata"].get("labels", {}))]
        if not matched:
            error(f"Service {s['metadata']['name']}: selector {sel} matches no pod template")
        for p in s["spec"]["ports"]:
            for o in matched:
                names = {cp["name"]: cp["containerPort"] for c in o["spec"]["template"]["spec"]["containers"]
                         for cp in c.get("ports", [])}
                if p["targetPort"] not in names and p["targetPort"] not in names.values():
                    error(f"Service {s['metadata']['name']} port {p['name']}: targetPort "
                          f"{p['targetPort']} is not a container port of {o['metadata']['name']}")


def check_dashboards(repo, monitoring):
    """The dashboards ConfigMap (generated by deploy/grafana/kustomization.yaml) holds every
    dashboard of deploy/grafana/dashboards: a new file must also be listed there."""
    src = os.path.join(repo, "deploy", "grafana", "dashboards")
    files = sorted(os.listdir(src))
    for o in monitoring:
        if o["kind"] == "ConfigMap" and o["metadata"].get("labels", {}).get("grafana_dashboard"):
            keys = sorted(o.get("data", {}))
            if keys != files:
                error(f"ConfigMap {o['metadata']['name']} holds {keys}, {src} holds {files}: "
                      f"list them in deploy/grafana/kustomization.yaml")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kubectl", required=True)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--server_bin", required=True,
                        help="the built steadyeval-server, to --check the ConfigMap's config")
    parser.add_argument("--require_version", default="v1.20.",
                        help="the kubectl's gitVersion must start with this ('' for any)")
    args = parser.parse_args()
    global SERVER_BIN
    SERVER_BIN = args.server_bin
    here = os.path.join(args.repo, "deploy", "kubernetes")
    v = subprocess.run([args.kubectl, "version", "--client", "-o", "json"], capture_output=True,
                       text=True)
    version = json.loads(v.stdout)["clientVersion"]["gitVersion"] if v.returncode == 0 else "?"
    if not version.startswith(args.require_version):
        print(f"{args.kubectl} is {version}, not {args.require_version}x (Debian's "
              f"kubernetes-client): run scripts/install-deps.sh, then re-run cmake")
        return 1
    core = render(args.kubectl, here)
    monitoring = render(args.kubectl, os.path.join(here, "monitoring"))
    core_objects = core + [o for o in monitoring if o.get("apiVersion") == "v1"]
    for o in core_objects:
        check_core(o)
    for o in monitoring:
        if o.get("apiVersion") != "v1":
            check_monitor(o, core)
    if not any(o["kind"] == "ConfigMap" and o["metadata"].get("labels", {}).get("grafana_dashboard")
               for o in monitoring):
        error("monitoring: no Grafana dashboards ConfigMap")
    readme = open(os.path.join(here, "README.md")).read()
    check_references(core, args.repo, readme)
    check_dashboards(args.repo, monitoring)
    for e in errors:
        print(e)
    print(f"checked {len(core_objects)} core and {len(monitoring) - len(core_objects) + len(core)} "
          f"monitoring objects with kubectl {version}: {len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
