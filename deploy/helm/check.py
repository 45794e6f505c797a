#!/usr/bin/env python3
"""Checks of the Helm chart in deploy/helm/panoptes, and the NATS config it hands to the NATS chart.

    python3 deploy/helm/check.py                  # = render: the checks below
    python3 deploy/helm/check.py render [VALUES...] [--out DIR] [--kube-version 1.33.0]
    python3 deploy/helm/check.py nats-conf OUT --port N --store DIR [--http-port N] [--values FILE]

`render` without VALUES renders the chart (Helm v4's own Go engine, through the PyPI package
helm-python-sdk: no cluster, no helm binary) for the default values, for values-gpu-split.yaml
and for an external-NATS/HPA/DaemonSet case, and validates every manifest against the Kubernetes
API schemas (kubernetes-validate, strict: unknown fields fail too). KEDA's ScaledObject and the
Prometheus Operator's ServiceMonitor are CRDs that kubernetes-validate has no schema for; they are
checked against the small JSON Schemas below, written from the CRDs' documented fields. It also
checks each case's topology against schema/topology.schema.json, runs `helm lint` (strict),
checks that the render-time `fail` checks refuse inconsistent values, and that the chart's copy
of the quickstart is topologies/quickstart.yaml. With VALUES (files, merged like
`helm -f a -f b`) it renders and validates that one case. Exit status 1 on any failure, naming
the file and the error.

The chart declares the official NATS chart as a dependency (condition nats.enabled), which is not
vendored (it is fetched by `helm dependency build`, from its own repository). The Go engine this
script renders with takes the chart as loaded: a dependency missing from charts/ is simply not
rendered, so no stripped copy of the chart is needed. (`helm template`/`helm install` would refuse
a missing dependency; `helm lint` reports it, and this script accepts that one message.) When
charts/ does hold it, its rendered nats.conf is checked for the partition mapping too.

`nats-conf` writes the nats-server config the chart gives the NATS chart (values.yaml's
`nats.config.merge`, max_payload, and `nats.config.patch`, the mappings; written as the NATS
chart writes it: JSON with `<< ... >>` values unquoted), plus `listen` on 127.0.0.1:PORT and JetStream in DIR, so a test
can start a real nats-server with exactly that mapping. It prints nothing on stdout (OUT `-`:
the config itself).

It needs the venv scripts/setup.sh makes ($PANOPTES_HOME/venv: helm-python-sdk,
kubernetes-validate, PyYAML); run with another python, it re-runs itself with that one.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHART = HERE / "panoptes"
REPO = HERE.parent.parent
KUBE_VERSION = "1.33.0"
RELEASE, NAMESPACE = "demo", "video"


def _venv_python() -> Path:
    home = os.environ.get("PANOPTES_HOME") or str(Path.home() / ".cache" / "panoptes")
    return Path(home) / "venv" / "bin" / "python"


def _imports(*names: str) -> None:
    """Imports the venv's packages, re-running this script with the venv's python if needed."""
    try:
        for name in names:
            __import__(name)
    except ImportError as e:
        venv = _venv_python()
        if os.environ.get("PANOPTES_HELM_CHECK_REEXEC") or not venv.exists():
            sys.exit(f"check.py: {e}; install it with scripts/setup.sh (venv {venv})")
        os.environ["PANOPTES_HELM_CHECK_REEXEC"] = "1"
        os.execv(str(venv), [str(venv), str(Path(__file__).resolve()), *sys.argv[1:]])


# ------------------------------------------------------------------------------------------------
# Values


def merge_values(base: dict, over: dict) -> dict:
    """Helm's merge of values files: maps merge key by key, anything else replaces, null removes."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_values(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_values(path: Path) -> dict:
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: not a map of values")
    return data


# ------------------------------------------------------------------------------------------------
# nats-conf


def nats_format(config: dict) -> str:
    """nats.conf as the NATS chart writes it (nats.formatConfig): pretty JSON, `"<< x >>"` → x."""
    text = json.dumps(config, indent=2, ensure_ascii=False)
    return re.sub(r'"<<\s+(.*?)\s+>>"', r"\1", text) + "\n"


def json_patch(doc: dict, ops: list) -> dict:
    """RFC 6902 add, replace and remove on objects: what the chart's NATS patches use."""
    doc = copy.deepcopy(doc)
    for op in ops:
        keys = [k.replace("~1", "/").replace("~0", "~") for k in op["path"].split("/")[1:]]
        parent = doc
        for k in keys[:-1]:
            parent = parent.setdefault(k, {})
        if op["op"] in ("add", "replace"):
            parent[keys[-1]] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            parent.pop(keys[-1], None)
        else:
            raise SystemExit(f"check.py: unsupported patch operation {op['op']!r} in nats.config.patch")
    return doc


def nats_settings(values: dict) -> dict:
    """What this chart adds to the NATS chart's nats.conf: config.merge, then config.patch."""
    config = (values.get("nats") or {}).get("config") or {}
    settings = json_patch(copy.deepcopy(config.get("merge") or {}), config.get("patch") or [])
    if "mappings" not in settings:
        raise SystemExit("check.py: the values give the NATS server no mappings (nats.config.patch)")
    return settings


def nats_conf(values: dict, port: int, store: str, http_port: int | None) -> str:
    config: dict = {"listen": f"127.0.0.1:{port}"}
    if http_port is not None:
        config["http"] = f"127.0.0.1:{http_port}"
    config["jetstream"] = {"store_dir": store}
    config.update(nats_settings(values))
    return nats_format(config)


def cmd_nats_conf(args: argparse.Namespace) -> int:
    _imports("yaml")
    values = load_values(CHART / "values.yaml")
    for extra in args.values or []:
        values = merge_values(values, load_values(Path(extra)))
    text = nats_conf(values, args.port, args.store, args.http_port)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
    return 0


# ------------------------------------------------------------------------------------------------
# Schemas of the CRD kinds (kubernetes-validate ships the built-in API only). Written from the
# CRDs' documented fields: KEDA's ScaledObject (keda.sh/v1alpha1, docs "ScaledObject
# specification" and the nats-jetstream scaler) and the Prometheus Operator's ServiceMonitor
# (monitoring.coreos.com/v1, API reference). Closed (additionalProperties: false) where this
# chart writes, so a misspelt field fails as it would against the CRD's structural schema.

_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"

CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "kind": {"const": "ScaledObject"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "additionalProperties": False,
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "name": {"type": "string"},
                            "envSourceContainerName": {"type": "string"},
                        },
                    },
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "idleReplicaCount": {"type": "integer", "minimum": 0},
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                    "fallback": {"type": "object"},
                    "advanced": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "restoreToOriginalReplicaCount": {"type": "boolean"},
                            "horizontalPodAutoscalerConfig": {"type": "object"},
                            "scalingModifiers": {
                                "type": "object",
                                # Both mandatory once scalingModifiers is given.
                                "required": ["formula", "target"],
                                "additionalProperties": False,
                                "properties": {
                                    "formula": {"type": "string", "minLength": 1},
                                    "target": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
                                    "activationTarget": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
                                    "metricType": {"enum": ["AverageValue", "Value"]},
                                },
                            },
                        },
                    },
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["type", "metadata"],
                            "additionalProperties": False,
                            "properties": {
                                "type": {"type": "string"},
                                "name": {"type": "string"},
                                "useCachedMetrics": {"type": "boolean"},
                                "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                                "authenticationRef": {"type": "object", "required": ["name"]},
                                # Trigger metadata is a map of strings (numbers quoted).
                                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                            },
                            # The nats-jetstream scaler's parameters.
                            "if": {"properties": {"type": {"const": "nats-jetstream"}}},
                            "then": {
                                "properties": {
                                    "metadata": {
                                        "required": ["natsServerMonitoringEndpoint", "account", "stream", "consumer"],
                                        "additionalProperties": False,
                                        "properties": {
                                            "natsServerMonitoringEndpoint": {"type": "string", "pattern": r"^[^/:]+(:[0-9]+)?$"},
                                            "account": {"type": "string", "minLength": 1},
                                            "stream": {"type": "string", "minLength": 1},
                                            "consumer": {"type": "string", "minLength": 1},
                                            "lagThreshold": {"type": "string", "pattern": r"^[0-9]+$"},
                                            "activationLagThreshold": {"type": "string", "pattern": r"^[0-9]+$"},
                                            "useHttps": {"enum": ["true", "false"]},
                                        },
                                    }
                                }
                            },
                        },
                    },
                },
            },
        },
    },
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "required": ["selector"],
                "additionalProperties": False,
                "properties": {
                    "jobLabel": {"type": "string"},
                    "selector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
                            "matchExpressions": {"type": "array"},
                        },
                    },
                    "namespaceSelector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "any": {"type": "boolean"},
                            "matchNames": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                    "endpoints": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "targetPort": {"type": ["string", "integer"]},
                                "path": {"type": "string"},
                                "scheme": {"enum": ["http", "https"]},
                                "interval": {"type": "string", "pattern": _DURATION},
                                "scrapeTimeout": {"type": "string", "pattern": _DURATION},
                                "honorLabels": {"type": "boolean"},
                                "relabelings": {"type": "array", "items": {"$ref": "#/$defs/relabel"}},
                                "metricRelabelings": {"type": "array", "items": {"$ref": "#/$defs/relabel"}},
                            },
                        },
                    },
                },
            },
        },
        "$defs": {
            "relabel": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "sourceLabels": {
                        "type": "array",
                        "items": {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"},
                    },
                    "separator": {"type": "string"},
                    "targetLabel": {"type": "string"},
                    "regex": {"type": "string"},
                    "modulus": {"type": "integer"},
                    "replacement": {"type": "string"},
                    "action": {
                        "enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod",
                                 "labelmap", "LabelMap", "labeldrop", "LabelDrop", "labelkeep", "LabelKeep",
                                 "lowercase", "Lowercase", "uppercase", "Uppercase", "keepequal", "KeepEqual",
                                 "dropequal", "DropEqual"]
                    },
                },
            }
        },
    },
}


def check_crd(doc: dict) -> str | None:
    """Validates a CRD kind's manifest; None when it is not one of ours."""
    import jsonschema

    schema = CRD_SCHEMAS.get((doc.get("apiVersion"), doc.get("kind")))
    if schema is None:
        return None
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = ".".join(str(p) for p in e.absolute_path) or "(root)"
        raise ValueError(f"{where}: {e.message}")
    if doc["kind"] == "ScaledObject":
        # Every name the formula uses is a trigger's name (KEDA refuses the object otherwise).
        mods = (doc["spec"].get("advanced") or {}).get("scalingModifiers")
        if mods:
            names = {t.get("name") for t in doc["spec"]["triggers"]}
            used = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", mods["formula"]))
            if missing := used - names:
                raise ValueError(f"spec.advanced.scalingModifiers.formula names no trigger: {sorted(missing)}")
    return "CRD schema in check.py"


# ------------------------------------------------------------------------------------------------
# render


class Failed(Exception):
    pass


def render(values: dict | None, name: str = RELEASE, namespace: str = NAMESPACE) -> dict[str, str]:
    import helm_python as helm

    helm.disable_logging()  # the engine logs each `fail` on stderr; the exception carries it
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=name, namespace=namespace)


def manifests(rendered: dict[str, str]):
    """(template path, document) of every Kubernetes object rendered (NOTES.txt left out)."""
    import yaml

    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            continue
        try:
            docs = list(yaml.safe_load_all(rendered[path]))
        except yaml.YAMLError as e:
            raise Failed(f"{path}: not YAML: {e}") from e
        for doc in docs:
            if doc is None:
                continue
            if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
                raise Failed(f"{path}: a document without apiVersion and kind")
            yield path, doc


def validate_case(label: str, values: dict | None, kube: str, out: Path | None,
                  name: str = RELEASE) -> tuple[int, int, dict[str, str]]:
    """Renders one case and validates each manifest; returns (ok, failed, rendered)."""
    import kubernetes_validate

    print(f"== {label} (release {name!r}, namespace {NAMESPACE!r}, Kubernetes {kube})")
    try:
        rendered = render(values, name=name)
    except Exception as e:  # noqa: BLE001 - the render error is the report
        print(f"FAIL {label}: render: {e}")
        return 0, 1, {}
    if out is not None:
        case_dir = out / label
        for path, text in rendered.items():
            dest = case_dir / path
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
    ok = failed = 0
    seen: set[tuple[str, str]] = set()
    try:
        docs = list(manifests(rendered))
    except Failed as e:
        print(f"FAIL {e}")
        return 0, 1, rendered
    for path, doc in docs:
        kind, name_ = doc["kind"], (doc.get("metadata") or {}).get("name", "?")
        what = f"{kind}/{name_}"
        if (kind, name_) in seen:
            print(f"FAIL {what} ({path}): rendered twice")
            failed += 1
            continue
        seen.add((kind, name_))
        try:
            note = check_crd(doc)
            if note is None:
                kubernetes_validate.validate(doc, kube, strict=True)
                note = "kubernetes-validate, strict"
            print(f"{what}: ok ({note})")
            ok += 1
        except kubernetes_validate.SchemaNotFoundError as e:
            print(f"FAIL {what} ({path}): {e.message}")
            failed += 1
        except Exception as e:  # noqa: BLE001 - jsonschema/ValueError: the validation error
            where = ".".join(str(p) for p in getattr(e, "absolute_path", [])) or ""
            msg = getattr(e, "message", None) or str(e)
            print(f"FAIL {what} ({path}): {where + ': ' if where else ''}{msg}")
            failed += 1
    return ok, failed, rendered


def check_topology(values: dict | None) -> str:
    """The case's topology against schema/topology.schema.json (its structure; `panoptes
    validate` checks the rest, with the image's files)."""
    import jsonschema
    import yaml

    text = ((values or {}).get("topology") or {}).get("content") or (CHART / "files" / "quickstart.yaml").read_text()
    schema = json.loads((REPO / "schema" / "topology.schema.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(yaml.safe_load(text)), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = ".".join(str(p) for p in e.absolute_path) or "(root)"
        raise Failed(f"topology.content: {where}: {e.message}")
    return "topology: ok (schema/topology.schema.json)"


def lint(values: dict | None, kube: str) -> list[str]:
    """`helm lint --strict`; the missing NATS dependency (see the module doc) is accepted."""
    import helm_python as helm

    helm.disable_logging()
    # Lint renders in Helm's lint mode, where a `fail` only logs (Go's log, on fd 2) and the
    # render goes on; those lines are noise here (the refusals are checked separately).
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            report = helm.lint(CHART, values, strict=True, kube_version=f"v{kube}")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    problems = []
    for m in report.get("messages", []):
        if m.get("severity", 0) < 2:
            continue
        if "missing these dependencies: nats" in m.get("error", "") and not (CHART / "charts").exists():
            continue
        problems.append(f"{m.get('path')}: {m.get('error')}")
    return problems


def topology_with(namespace: str | None = None, **extra: str) -> str:
    """The quickstart topology, with another namespace and extra top-level YAML lines."""
    text = (REPO / "topologies" / "quickstart.yaml").read_text()
    if namespace is not None:
        text = text.replace("namespace: panoptes", f"namespace: {namespace}")
    for key, value in extra.items():
        text += f"\n{key}: {value}\n"
    return text


# Values that must not render, and a part of the message that must say why.
REFUSED = [
    ("the topology's namespace differs from the NATS mapping's",
     {"topology": {"content": topology_with("site7")}},
     'the NATS mappings (nats.config.patch, nats.config.merge) have no entry for "site7.frames.*"'),
    ("the topology's partition count differs from the NATS mapping's",
     {"topology": {"content": topology_with(partitions="32")}},
     "{{partition(32,1)}}"),
    ("terminationGracePeriodSeconds not above the stop timeout",
     {"stopTimeoutSeconds": 30, "terminationGracePeriodSeconds": 30},
     "terminationGracePeriodSeconds (30) must exceed stopTimeoutSeconds (30)"),
    ("KEDA with live delivery",
     {"autoscaling": {"keda": {"enabled": True}}},
     "set `delivery: durable` in the topology"),
    ("KEDA and the HPA together",
     {"autoscaling": {"keda": {"enabled": True}, "hpa": {"enabled": True}}},
     "both enabled"),
    ("a unit naming a stage the topology lacks",
     {"workers": {"units": [{"name": "a", "stages": ["preprocess", "detect", "text-boxes", "nope"]}]}},
     'the topology has no stage "nope"'),
    ("a stage in no unit",
     {"workers": {"units": [{"name": "a", "stages": ["preprocess", "detect"]}]}},
     'stage "text-boxes" is in no unit'),
    ("a stage in two units",
     {"workers": {"units": [{"name": "a", "stages": ["preprocess", "detect"]},
                            {"name": "b", "stages": ["detect", "text-boxes"]}]}},
     'stage "detect" is in units "a" and "b"'),
    ("a camera in two ingest groups",
     {"ingest": {"groups": [{"name": "a", "cameras": ["cam-alpha"]},
                            {"name": "b", "cameras": ["cam-alpha", "cam-bravo"]}]}},
     'camera "cam-alpha" is in ingest groups "a" and "b"'),
    ("an external NATS without a URL",
     {"nats": {"enabled": False}},
     "set natsUrl"),
    ("a sink without outputs in the topology",
     {"sink": {"enabled": True}},
     "declares no `outputs`"),
]

# A third case: an existing NATS, CPU autoscaling, a DaemonSet ingest group, sink and recorder,
# NATS credentials, release name equal to the chart name.
EXTERNAL = {
    "nats": {"enabled": False},
    "natsUrl": "nats://nats.messaging.svc:4222",
    "natsAuth": {"secretName": "panoptes-nats", "userKey": "user", "passwordKey": "password",
                 "credsKey": "panoptes.creds"},
    "topology": {"content": topology_with(
        outputs="[{kind: webhook, id: hook, from: [detections], url: 'http://hooks.example/x'}]",
        record="{rules: [{id: all, kinds: [line_cross]}]}")},
    "ingest": {"groups": [
        {"name": "edge-1", "kind": "DaemonSet", "cameras": ["cam-alpha"],
         "nodeSelector": {"kubernetes.io/hostname": "edge-1"}, "hostNetwork": True},
        {"name": "edge-2", "cameras": ["cam-bravo"]}]},
    "autoscaling": {"hpa": {"enabled": True}},
    "sink": {"enabled": True},
    "recorder": {"enabled": True},
    "view": {"token": {"existingSecret": "panoptes-view-token"}},
    "metrics": {"serviceMonitor": {"enabled": True}},
    "otel": {"endpoint": "http://otel-collector:4317"},
}


def check_nats_subchart(rendered: dict[str, str], values: dict) -> str:
    """With the NATS chart in charts/: its nats.conf carries our mapping and max_payload."""
    settings = nats_settings(merge_values(load_values(CHART / "values.yaml"), values))
    for path, text in rendered.items():
        if path.startswith("panoptes/charts/nats/") and "nats.conf" in text:
            for k, v in settings["mappings"].items():
                if json.dumps(k) not in text or json.dumps(v) not in text:
                    raise Failed(f"{path}: nats.conf lacks the mapping {k} -> {v}")
            return f"{path}: nats.conf has the mapping"
    raise Failed("the NATS chart is in charts/ but rendered no nats.conf")


def cmd_render(args: argparse.Namespace) -> int:
    _imports("helm_python", "kubernetes_validate", "yaml", "jsonschema")
    import helm_python as helm

    kube = args.kube_version
    out = Path(args.out) if args.out else None
    total_ok = total_failed = 0

    deps = helm.dependency_list(CHART)
    for d in deps:
        print(f"dependency {d['name']} {d['version']} ({d['repository']}): {d['status']}")
    nats_present = any(d["name"] == "nats" and d["status"] in ("ok", "unpacked") for d in deps)
    if not nats_present:
        print("  not in charts/: the NATS chart's own manifests are not rendered here; this chart's are")

    if args.values:
        values: dict = {}
        for f in args.values:
            values = merge_values(values, load_values(Path(f)))
        cases = [(" + ".join(Path(f).name for f in args.values), values, RELEASE)]
    else:
        cases = [
            ("default", None, RELEASE),
            ("gpu-split", load_values(CHART / "values-gpu-split.yaml"), RELEASE),
            ("external-nats-hpa", EXTERNAL, "panoptes"),
        ]
    for label, values, name in cases:
        ok, failed, rendered = validate_case(label, values, kube, out, name)
        total_ok += ok
        total_failed += failed
        try:
            print(check_topology(values))
            total_ok += 1
        except Failed as e:
            print(f"FAIL {e}")
            total_failed += 1
        if nats_present and rendered and (values or {}).get("nats", {}).get("enabled", True):
            try:
                print(check_nats_subchart(rendered, values or {}))
            except Failed as e:
                print(f"FAIL {e}")
                total_failed += 1
        problems = lint(values, kube)
        for problem in problems:
            print(f"FAIL helm lint ({label}): {problem}")
            total_failed += 1
        if not problems:
            print(f"helm lint --strict ({label}): ok" + ("" if nats_present else " (but for the absent nats dependency)"))
            total_ok += 1

    if not args.values:
        print("== render-time checks refuse inconsistent values")
        for what, values, expect in REFUSED:
            try:
                render(values)
            except helm.HelmRenderError as e:
                if expect in str(e):
                    print(f"refused: {what}: ok")
                    total_ok += 1
                else:
                    print(f"FAIL refused for another reason: {what}: {e}")
                    total_failed += 1
                continue
            print(f"FAIL rendered although {what} (expected a failure naming {expect!r})")
            total_failed += 1

        print("== the chart's default topology")
        copy_ = CHART / "files" / "quickstart.yaml"
        if copy_.read_bytes() == (REPO / "topologies" / "quickstart.yaml").read_bytes():
            print(f"{copy_.relative_to(REPO)} = topologies/quickstart.yaml: ok")
            total_ok += 1
        else:
            print(f"FAIL {copy_.relative_to(REPO)} differs from topologies/quickstart.yaml: copy it again")
            total_failed += 1

        print("== nats-conf")
        with tempfile.TemporaryDirectory() as tmp:
            text = nats_conf(load_values(CHART / "values.yaml"), 4222, tmp, None)
        want = '"panoptes.frames.*": "panoptes.frames.{{wildcard(1)}}.{{partition(16,1)}}"'
        if want in text and '"max_payload": 8MB' in text:
            print("the chart's NATS config has max_payload 8MB and the mapping of docs/nats.md: ok")
            total_ok += 1
        else:
            print(f"FAIL nats-conf output lacks {want} or max_payload 8MB:\n{text}")
            total_failed += 1

    print(f"{total_ok} ok, {total_failed} failed")
    return 1 if total_failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    r = sub.add_parser("render", help="render the chart and validate the manifests (the default)")
    r.add_argument("values", nargs="*", help="values files, merged in order (default: the built-in cases)")
    r.add_argument("--out", help="write the rendered manifests under DIR/<case>/")
    r.add_argument("--kube-version", default=KUBE_VERSION, help=f"Kubernetes API version (default {KUBE_VERSION})")
    n = sub.add_parser("nats-conf", help="write the chart's nats-server config for a local server")
    n.add_argument("out", help="file to write (- for stdout)")
    n.add_argument("--port", type=int, default=4222, help="client port, on 127.0.0.1")
    n.add_argument("--store", required=True, help="JetStream store directory")
    n.add_argument("--http-port", type=int, help="monitoring port (/healthz, /jsz), on 127.0.0.1")
    n.add_argument("--values", action="append", help="values file merged over values.yaml (repeatable)")
    args = parser.parse_args()
    if args.command == "nats-conf":
        return cmd_nats_conf(args)
    if args.command is None:
        args = parser.parse_args(["render", *sys.argv[1:]])
    return cmd_render(args)


if __name__ == "__main__":
    sys.exit(main())
