"""Renders the chart offline with Helm itself (PyPI helm-python-sdk) and checks the result.

For the default values, for ci/production-values.yaml, for a PROXY-protocol setup and for
one without a metrics port:
render (which also checks the values against values.schema.json), validate every manifest
of a built-in kind with `kubernetes-validate --strict`, check that the Service and the
ServiceMonitor name ports the pods have and that probes and scrapes avoid a PROXY-protocol
port, and print, as JSON, what the chart gives Starling containers (arguments, environment
variable names, its settings, the addresses it binds, probe paths and ports, ports) so that
the test suite can check each against the binary. Values the chart must refuse are refused. Exits non-zero
on any failure.

    python3 helm/starling/ci/check_chart.py helm/starling OUTPUT_DIR
"""

import json
import pathlib
import re
import subprocess
import sys

import helm_python as helm
import yaml

CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}

PROXY_PROTOCOL = {
    "clientAddresses": {"trustedProxies": ["10.0.0.0/8"], "proxyProtocol": True},
    "serviceMonitor": {"enabled": True},
}


def refused(chart, values, words):
    """Fails unless rendering `values` is refused with a message holding `words`."""
    try:
        chart.render(values, name="relay", namespace="nostr")
    except Exception as refusal:
        assert words in str(refusal), (values, refusal)
    else:
        sys.exit(f"the chart did not refuse {values}")


def expanded_only(env):
    """Variables that only feed $(NAME) in later ones: checks each is defined before use."""
    defined, used = [], set()
    for variable in env:
        for name in re.findall(r"\$\(([A-Z_]+)\)", variable.get("value", "")):
            assert name in defined, f"{variable['name']} uses $({name}) before it is defined"
            used.add(name)
        defined.append(variable["name"])
    return used


def render(chart, values):
    manifests = chart.render(values, name="relay", namespace="nostr", is_install=True)
    documents = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        documents.extend(d for d in yaml.safe_load_all(text) if d)
    return documents


def main():
    chart_dir, out_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    chart = helm.Chart.load(chart_dir)
    production = yaml.safe_load((chart_dir / "ci" / "production-values.yaml").read_text())
    containers = []
    variants = [
        ("default", None),
        ("production", production),
        ("proxy-protocol", PROXY_PROTOCOL),
        ("one-port", {"metrics": {"port": 0}, "serviceMonitor": {"enabled": True}}),
    ]
    for label, values in variants:
        documents = render(chart, values)
        kinds = sorted({d["kind"] for d in documents})
        builtin = [d for d in documents if d["kind"] not in CUSTOM_KINDS]
        files = []
        for n, document in enumerate(builtin):
            path = out_dir / f"{label}-{n}-{document['kind']}.yaml"
            path.write_text(yaml.safe_dump(document))
            files.append(str(path))
        subprocess.run(["kubernetes-validate", "--strict", "--quiet", *files], check=True)
        for document in documents:
            if document["kind"] in CUSTOM_KINDS:
                assert document["apiVersion"] == "monitoring.coreos.com/v1", document
                assert document["spec"], document
            spec = document.get("spec", {})
            pod = spec.get("template", {}).get("spec", {})
            config = {
                d["metadata"]["name"]: d.get("data", {}) for d in documents if d["kind"] == "ConfigMap"
            }
            for container in pod.get("containers", []):
                only_expanded = expanded_only(container.get("env", []))
                env = [e["name"] for e in container.get("env", []) if e["name"] not in only_expanded]
                settings = {}
                for source in container.get("envFrom", []):
                    settings.update(config[source["configMapRef"]["name"]])
                env.extend(settings.keys())
                ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
                probes = []
                for kind in ("livenessProbe", "readinessProbe"):
                    if kind in container:
                        get = container[kind]["httpGet"]
                        probes.append({"path": get["path"], "port": ports.get(get["port"], get["port"])})
                        if label == "proxy-protocol":
                            assert get["port"] == "metrics", f"{kind} on the PROXY-protocol port"
                containers.append({
                    "values": label,
                    "kind": document["kind"],
                    "args": container.get("args", []),
                    "env": sorted(set(env)),
                    "binds": {
                        k: settings[k] for k in ("STARLING_BIND", "STARLING_METRICS_BIND") if k in settings
                    },
                    "settings": settings,
                    "probes": probes,
                    "ports": list(ports.values()),
                })
        check_ports(documents, label)
        print(f"{label}: {len(documents)} manifests ({', '.join(kinds)})", file=sys.stderr)
    refused(chart, {"replicaCount": "many"}, "replicaCount")
    refused(chart, {"clientAddresses": {"proxyProtocol": True}}, "trustedProxies")
    refused(chart, {**PROXY_PROTOCOL, "metrics": {"port": 0}}, "metrics.port")
    refused(chart, {"redisSentinel": {"enabled": True}}, "sentinels")
    print(json.dumps(containers))


def check_ports(documents, label):
    """The Service's target ports are the pods' ports, the ServiceMonitor scrapes a Service
    port, and with the PROXY protocol it is not the relay's."""
    pod_ports = {
        p["name"]
        for d in documents if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
        for p in c.get("ports", [])
    }
    service_ports = set()
    for service in (d for d in documents if d["kind"] == "Service"):
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in pod_ports, f"{label}: Service targets {port['targetPort']}"
            service_ports.add(port["name"])
    for monitor in (d for d in documents if d["kind"] == "ServiceMonitor"):
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in service_ports, f"{label}: ServiceMonitor scrapes {endpoint['port']}"
            if label == "proxy-protocol":
                assert endpoint["port"] == "metrics", "the ServiceMonitor scrapes the PROXY-protocol port"


if __name__ == "__main__":
    main()
