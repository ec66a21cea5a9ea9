"""Lints the chart and renders it for one values file into a directory, one file per template.

    python render.py <out dir> [values.yaml]

Exits non-zero on a lint error or a rendering failure (schema violations included).
"""

import pathlib
import sys

import helm_python
import yaml

CHART = pathlib.Path(__file__).resolve().parents[1] / "helm" / "switchboard"
KUBE_VERSION = "v1.30.0"


def main() -> int:
    out = pathlib.Path(sys.argv[1])
    values = yaml.safe_load(pathlib.Path(sys.argv[2]).read_text()) if len(sys.argv) > 2 else {}
    report = helm_python.lint(CHART, values, strict=True, kube_version=KUBE_VERSION)
    # Severity 3 is an error; with strict, warnings (2) fail too. "icon is recommended" is info (1).
    problems = [m for m in report["messages"] if m["severity"] >= 2] + [
        {"severity": 3, "path": "", "error": e} for e in report["errors"]
    ]
    for m in problems:
        print(f"lint: {m['path']}: {m['error']}", file=sys.stderr)
    if problems:
        return 1
    with helm_python.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        manifests = chart.render(values, name="switchboard", namespace="switchboard", is_install=True)
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for template, text in sorted(manifests.items()):
        if not template.endswith(".yaml") or not text.strip():
            continue
        docs = [d for d in yaml.safe_load_all(text) if d]
        if not docs:
            continue
        (out / pathlib.Path(template).name).write_text(text)
        count += len(docs)
    print(f"rendered {count} manifests into {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
