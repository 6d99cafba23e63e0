"""Render and lint the Helm chart with the real Helm engine (PyPI helm-python-sdk: Helm's Go SDK
as a library, no helm binary, no cluster), for each case of a matrix read as JSON on stdin.

stdin:  {"chart": DIR, "kubeVersion": "1.33.0", "packageDir": DIR,
         "cases": [{"name", "values", "namespace"}]}
stdout: one JSON object: {"helm": VERSION, "cases": [{"name", "manifests": {template: text},
        "lint": {...}, "schemaError": str|null, "renderError": str|null}],
        "packaged": {template: text} (the default render of the packaged chart)}
Exit 3 (with a message) when helm-python-sdk is not installed, so the caller can tell a missing
tool from a failure.
"""

import json
import sys

try:
    import helm_python as helm
except ImportError:
    print("helm-python-sdk is not installed: pip install helm-python-sdk", file=sys.stderr)
    sys.exit(3)


def main():
    request = json.load(sys.stdin)
    chart_dir = request["chart"]
    chart = helm.Chart.load(chart_dir)
    results = []
    for case in request["cases"]:
        values = case.get("values") or {}
        result = {"name": case["name"], "manifests": {}, "lint": None,
                  "schemaError": None, "renderError": None}
        try:
            chart.validate_schema(values)
        except helm.HelmError as e:
            result["schemaError"] = str(e)
        try:
            result["manifests"] = chart.render(
                values, name="sandbox-admission",
                namespace=case.get("namespace", "default"), is_install=True)
        except helm.HelmError as e:
            result["renderError"] = str(e)
        result["lint"] = helm.lint(chart_dir, values, strict=True,
                                   namespace=case.get("namespace", "default"),
                                   kube_version=request.get("kubeVersion"))
        results.append(result)
    # The packaged chart (what a chart repository serves) must carry the symlinked files.
    packaged = None
    if request.get("packageDir"):
        archive = helm.package(chart_dir, destination=request["packageDir"])
        with open(archive, "rb") as f:
            packaged = helm.Chart.load_archive(f.read()).render(
                {}, name="sandbox-admission", namespace="default", is_install=True)
    json.dump({"helm": helm.helm_sdk_version(), "cases": results, "packaged": packaged},
              sys.stdout)


if __name__ == "__main__":
    main()
