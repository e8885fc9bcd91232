"""Renders the chart offline with Helm itself (PyPI helm-python-sdk) and checks the result.

For the default values and for ci/production-values.yaml: render (which also checks the
values against values.schema.json), validate every manifest of a built-in kind with
`kubernetes-validate --strict`, and print, as JSON, what the chart gives Starling containers
(arguments, environment variable names, probe paths, ports) so that the test suite can
check each against the binary. Exits non-zero on any failure.

    python3 helm/starling/ci/check_chart.py helm/starling OUTPUT_DIR
"""

import json
import pathlib
import subprocess
import sys

import helm_python as helm
import yaml

CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}


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
    for label, values in [("default", None), ("production", production)]:
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
                env = [e["name"] for e in container.get("env", [])]
                for source in container.get("envFrom", []):
                    env.extend(config[source["configMapRef"]["name"]].keys())
                probes = [
                    container[p]["httpGet"]["path"]
                    for p in ("livenessProbe", "readinessProbe")
                    if p in container
                ]
                containers.append({
                    "values": label,
                    "kind": document["kind"],
                    "args": container.get("args", []),
                    "env": sorted(set(env)),
                    "probes": probes,
                    "ports": [p["containerPort"] for p in container.get("ports", [])],
                })
        print(f"{label}: {len(documents)} manifests ({', '.join(kinds)})", file=sys.stderr)
    try:
        chart.render({"replicaCount": "many"}, name="relay", namespace="nostr")
    except Exception:
        pass
    else:
        sys.exit("values.schema.json did not refuse replicaCount: many")
    try:
        chart.render({"clientAddresses": {"proxyProtocol": True}}, name="relay", namespace="nostr")
    except Exception as refused:
        assert "trustedProxies" in str(refused), refused
    else:
        sys.exit("the chart did not refuse proxyProtocol without trustedProxies")
    print(json.dumps(containers))


if __name__ == "__main__":
    main()
