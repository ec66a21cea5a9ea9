"""Wiring checks over the rendered chart (run by scripts/deploy-check with pytest).

scripts/deploy-check renders the chart for the default values and ci/production-values.yaml into
$SWITCHBOARD_RENDERED/<case>/*.yaml first; these tests read those files, and render the invalid
values themselves to see the schema reject them.
"""

import os
import pathlib

import helm_python
import kubernetes_validate
import pytest
import yaml

CHART = pathlib.Path(__file__).resolve().parents[1] / "helm" / "switchboard"
RENDERED = pathlib.Path(os.environ["SWITCHBOARD_RENDERED"])
CASES = ["default", "production"]

# The ports and commands each service really uses (README; *config.rs defaults).
SERVICES = {
    "ingest": {"kind": "Deployment", "port": 8080, "command": ["switchboard-ingest"]},
    "processor": {"kind": "StatefulSet", "port": 9090, "command": ["switchboard-processor", "process"]},
    "sink": {"kind": "Deployment", "port": 9091, "command": ["switchboard-processor", "sink"]},
    "actions": {"kind": "StatefulSet", "port": 9097, "command": ["switchboard-processor", "actions"]},
}
INGEST_ADMIN_PORT = 9095
# Env vars the services read as configuration (ingest/src/config.rs, processor/src/*config.rs ENV_KEYS).
ENV_KEYS = {
    "ingest": {"listen", "kafka_bootstrap", "schema_registry_url", "public_url", "twilio_auth_tokens",
               "twilio_shared_keys", "stripe_webhook_secrets", "calendly_signing_keys"},
    "processor": {"kafka_bootstrap", "schema_registry_url", "instance_id", "admin_token", "sink_api_token",
                  "state_dir"},
    "sink": {"kafka_bootstrap", "schema_registry_url", "database_url", "api_token"},
    "actions": {"kafka_bootstrap", "schema_registry_url", "instance_id"},
}
NOT_CONFIG = {"SWITCHBOARD_CONFIG", "SWITCHBOARD_LOG", "SWITCHBOARD_LOG_FORMAT"}


def load(case):
    docs = []
    for path in sorted((RENDERED / case).glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def values(case):
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    if case == "production":
        override = yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text())
        with helm_python.Chart.load(CHART) as chart:
            return chart.merge_values(override)
    return defaults


def find(docs, kind, component=None):
    return [
        d for d in docs
        if d["kind"] == kind
        and (component is None or d["metadata"]["labels"].get("app.kubernetes.io/component") == component)
    ]


def workload(docs, component):
    kind = SERVICES[component]["kind"]
    found = find(docs, kind, component)
    assert len(found) == 1, f"one {kind} for {component}, got {len(found)}"
    return found[0]


def render(overrides):
    """The chart rendered for the default values with `overrides`, as a list of manifests."""
    with helm_python.Chart.load(CHART) as chart:
        manifests = chart.render(values=overrides, name="switchboard", namespace="switchboard")
    return [
        d
        for template, text in manifests.items()
        if template.endswith(".yaml")
        for d in yaml.safe_load_all(text)
        if d
    ]


def enabled(case, component):
    return values(case)[component]["enabled"]


# Every (values file, component) pair the chart deploys; a disabled component renders nothing.
ENABLED = [(case, component) for case in CASES for component in SERVICES if enabled(case, component)]
DISABLED = [(case, component) for case in CASES for component in SERVICES if not enabled(case, component)]


@pytest.mark.parametrize("case,component", DISABLED)
def test_a_disabled_component_renders_no_workload(case, component):
    assert not find(load(case), SERVICES[component]["kind"], component)


def secret_keys(docs):
    """{secret name: set of keys} of the rendered Secrets."""
    return {
        s["metadata"]["name"]: set(s.get("stringData", {})) | set(s.get("data", {}))
        for s in find(docs, "Secret")
    }


@pytest.mark.parametrize("case,component", ENABLED)
def test_probes_ports_and_commands(case, component):
    pod = workload(load(case), component)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == SERVICES[component]["command"]
    port, *admin = container["ports"]
    assert port == {"name": "http", "containerPort": SERVICES[component]["port"], "protocol": "TCP"}
    # ingest: probes (and metrics) on the admin port, apart from the webhooks.
    probed = "admin" if component == "ingest" else "http"
    if component == "ingest":
        assert admin == [{"name": "admin", "containerPort": INGEST_ADMIN_PORT, "protocol": "TCP"}]
    else:
        assert admin == []
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": probed}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": probed}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": probed}
    # The TOML file listens where the probes look.
    config = find(load(case), "ConfigMap")
    toml = next(c for c in config if c["metadata"]["name"].endswith("-config"))["data"][f"{component}.toml"]
    key = "listen" if component == "ingest" else "admin_listen"
    assert f'{key} = "0.0.0.0:{SERVICES[component]["port"]}"' in toml
    if component == "ingest":
        assert f'admin_listen = "0.0.0.0:{INGEST_ADMIN_PORT}"' in toml


@pytest.mark.parametrize("case", CASES)
def test_ingest_metrics_are_scraped_from_the_admin_port_only(case):
    docs = load(case)
    services = {s["metadata"]["name"]: s for s in find(docs, "Service")}
    admin = next(s for name, s in services.items() if name.endswith("-ingest-admin"))
    assert admin["spec"]["type"] == "ClusterIP"
    assert admin["spec"]["ports"] == [{"name": "admin", "port": INGEST_ADMIN_PORT, "targetPort": "admin", "protocol": "TCP"}]
    webhooks = next(s for name, s in services.items() if name.endswith("-ingest"))
    assert [p["targetPort"] for p in webhooks["spec"]["ports"]] == ["http"], "no admin port behind the Ingress"


def test_the_service_monitor_scrapes_ingest_on_its_admin_port():
    with helm_python.Chart.load(CHART) as chart:
        manifests = chart.render(
            values={"serviceMonitor": {"enabled": True}}, name="switchboard", namespace="switchboard"
        )
    docs = [
        d
        for template, text in manifests.items()
        if template.endswith(".yaml")
        for d in yaml.safe_load_all(text)
        if d
    ]
    monitors = {m["metadata"]["name"]: m for m in find(docs, "ServiceMonitor")}
    assert any(name.endswith("-ingest") for name in monitors), list(monitors)
    for name, monitor in monitors.items():
        (endpoint,) = monitor["spec"]["endpoints"]
        expected = "admin" if name.endswith("-ingest") else "http"
        assert (endpoint["port"], endpoint["path"]) == (expected, "/metrics"), name


@pytest.mark.parametrize("case,component", ENABLED)
def test_env_names_and_secret_references(case, component):
    docs = load(case)
    vals = values(case)
    pod = workload(docs, component)["spec"]["template"]["spec"]
    secrets = secret_keys(docs)
    existing = vals["secrets"]["existingSecret"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["SWITCHBOARD_CONFIG"]["value"] == "/run/switchboard/config.toml"
    for name in env:
        if name.startswith("SWITCHBOARD_") and name not in NOT_CONFIG:
            key = name.removeprefix("SWITCHBOARD_").lower()
            assert key in ENV_KEYS[component], f"{component}: {name} is not a configuration key it reads"
    assert env["SWITCHBOARD_KAFKA_BOOTSTRAP"]["value"] == vals["kafka"]["bootstrap"]
    if component in ("processor", "actions"):
        assert env["SWITCHBOARD_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    if component == "processor":
        ref = env["SWITCHBOARD_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref["key"] == "admin-token" and ref["optional"] is True
    if component == "sink":
        ref = env["SWITCHBOARD_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert ref["key"] == "database-url" and not ref.get("optional")
    if component == "ingest" and vals["ingest"]["publicUrl"]:
        assert env["SWITCHBOARD_PUBLIC_URL"]["value"] == vals["ingest"]["publicUrl"]
    # Every secret reference, in the init container too, names a rendered Secret holding the key,
    # or the existingSecret; a required key is never missing from the chart's own Secret.
    for c in pod["containers"] + pod.get("initContainers", []):
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if not ref:
                continue
            if existing and ref["name"] == existing:
                continue
            assert ref["name"] in secrets, f"{e['name']} refers to missing Secret {ref['name']}"
            if not ref.get("optional"):
                assert ref["key"] in secrets[ref["name"]], f"{e['name']}: key {ref['key']} missing"
    for volume in pod["volumes"]:
        if "secret" in volume and not volume["secret"].get("optional"):
            assert volume["secret"]["secretName"] in secrets or volume["secret"]["secretName"] in (
                existing, vals["kafka"]["caSecret"])


@pytest.mark.parametrize("case,component", ENABLED)
def test_security_context_and_grace_period(case, component):
    vals = values(case)[component]
    pod = workload(load(case), component)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "limits" in c["resources"] and "requests" in c["resources"]
    assert pod["terminationGracePeriodSeconds"] > vals["drainTimeoutSeconds"]
    config = next(c for c in find(load(case), "ConfigMap") if c["metadata"]["name"].endswith("-config"))
    assert f"drain_timeout = {vals['drainTimeoutSeconds']}\n" in config["data"][f"{component}.toml"]


@pytest.mark.parametrize("case", CASES)
def test_processor_is_a_statefulset_bounded_by_partitions(case):
    docs = load(case)
    vals = values(case)
    sts = workload(docs, "processor")
    assert sts["spec"]["replicas"] == vals["processor"]["replicas"]
    assert sts["spec"]["replicas"] <= vals["topics"]["partitions"]
    headless = [s for s in find(docs, "Service", "processor") if s["metadata"]["name"] == sts["spec"]["serviceName"]]
    assert headless and headless[0]["spec"]["clusterIP"] == "None"
    assert find(docs, "PodDisruptionBudget", "processor")


def test_production_sizes():
    docs = load("production")
    assert workload(docs, "ingest")["spec"]["replicas"] == 3
    assert workload(docs, "processor")["spec"]["replicas"] == 6
    (ingress,) = find(docs, "Ingress", "ingest")
    assert ingress["spec"]["tls"][0]["hosts"] == ["hooks.example.com"]
    ingest_env = {e["name"]: e for e in workload(docs, "ingest")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert ingest_env["SWITCHBOARD_PUBLIC_URL"]["value"] == "https://" + ingress["spec"]["rules"][0]["host"]
    # SASL: mechanism in the ConfigMap, credentials only in the Secret and the init container's env.
    config = next(c for c in find(docs, "ConfigMap") if c["metadata"]["name"].endswith("-config"))
    assert '"security.protocol" = "SASL_SSL"' in config["data"]["kafka.toml"]
    assert '"sasl.mechanisms" = "SCRAM-SHA-512"' in config["data"]["kafka.toml"]
    assert "placeholder-password" not in yaml.safe_dump(find(docs, "ConfigMap"))
    init = workload(docs, "processor")["spec"]["template"]["spec"]["initContainers"][0]
    assert {e["name"] for e in init["env"]} == {"KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"}


@pytest.mark.parametrize("case", CASES)
def test_topics_job_hooks(case):
    docs = load(case)
    vals = values(case)
    (job,) = find(docs, "Job", "topics")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    # What the Job reads must itself be a hook created before it (lower weight).
    for kind in ("ConfigMap", "Secret"):
        for doc in find(docs, kind, "topics"):
            assert doc["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
            assert int(doc["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"])
    (topics_cm,) = find(docs, "ConfigMap", "topics")
    lines = [line.split() for line in topics_cm["data"]["topics"].splitlines() if line.strip()]
    names = {line[0] for line in lines}
    # schemas/src/topics.rs ALL_TOPICS
    assert {
        "switchboard.raw.twilio", "switchboard.raw.stripe", "switchboard.raw.calendly", "switchboard.raw.generic",
        "switchboard.calls", "switchboard.messages", "switchboard.billing", "switchboard.bookings",
        "switchboard.generic", "switchboard.call-state", "switchboard.dlq", "switchboard.processor.dedup",
        "switchboard.dlq.redriven", "switchboard.actions.redrive", "switchboard.actions.attempts",
    } <= names
    by_name = {line[0]: line for line in lines}
    for compacted in ("switchboard.call-state", "switchboard.dlq.redriven"):
        assert "cleanup.policy=compact" in by_name[compacted]
    assert "cleanup.policy=compact,delete" in by_name["switchboard.processor.dedup"]
    # State changelogs are co-partitioned with the raw topics.
    assert by_name["switchboard.processor.dedup"][1] == by_name["switchboard.raw.twilio"][1] == str(vals["topics"]["partitions"])
    if vals["actions"]["enabled"]:
        assert {"switchboard.retry.1m", "switchboard.retry.5m", "switchboard.retry.30m"} <= names
        # Waiting retries outlive an outage of the actions service as long as the DLQ's records.
        dlq_retention = next(c for c in by_name["switchboard.dlq"] if c.startswith("retention.ms="))
        for name in names:
            if name.startswith("switchboard.retry."):
                retention = next(c for c in by_name[name] if c.startswith("retention.ms="))
                assert int(retention.split("=")[1]) >= int(dlq_retention.split("=")[1]), name


def test_invalid_values_are_rejected_by_the_schema():
    invalid = yaml.safe_load((CHART / "ci" / "invalid-values.yaml").read_text())
    with helm_python.Chart.load(CHART) as chart:
        with pytest.raises(helm_python.HelmValuesError, match="processor/replicas"):
            chart.validate_schema(invalid)
        with pytest.raises(helm_python.HelmValuesError):
            chart.render(values=invalid, name="switchboard", namespace="switchboard")


@pytest.mark.parametrize(
    "override, message",
    [
        ({"processor": {"replicas": 7}}, "must not exceed topics.partitions"),
        ({"processor": {"terminationGracePeriodSeconds": 20}}, "terminationGracePeriodSeconds"),
        ({"secrets": {"twilioAuthTokens": ["t"]}}, "ingest.publicUrl is required"),
        ({"kafka": {"securityProtocol": "SASL_SSL"}}, "kafka.sasl.username is required"),
    ],
)
def test_inconsistent_values_fail_rendering(override, message):
    with helm_python.Chart.load(CHART) as chart:
        with pytest.raises(helm_python.HelmError, match=message):
            chart.render(values=override, name="switchboard", namespace="switchboard")


def test_tracing_sets_the_otel_variables_of_every_service_only_when_an_endpoint_is_set():
    def env_of(overrides):
        with helm_python.Chart.load(CHART) as chart:
            manifests = chart.render(values=overrides, name="switchboard", namespace="switchboard")
        docs = [
            d
            for template, text in manifests.items()
            if template.endswith(".yaml")
            for d in yaml.safe_load_all(text)
            if d
        ]
        envs = {}
        for component, service in SERVICES.items():
            for doc in find(docs, service["kind"], component):
                (container,) = doc["spec"]["template"]["spec"]["containers"]
                envs[component] = {e["name"]: e.get("value") for e in container.get("env", [])}
        return envs

    off = env_of({})
    assert off and all(not any(n.startswith("OTEL_") for n in env) for env in off.values()), off
    on = env_of({"tracing": {"otlpEndpoint": "http://collector:4318"}})
    assert on.keys() == off.keys()
    for component, env in on.items():
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318"
        assert env["OTEL_SERVICE_NAME"] == f"switchboard-{component}"
        assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
        assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.1"


# The processor's state store (issue 14): a volume per pod at STATE_MOUNT, the store in STATE_DIR.
STATE_MOUNT = "/var/lib/switchboard"
STATE_DIR = "/var/lib/switchboard/state"


def processor_state(docs):
    """(StatefulSet spec, pod spec, container env by name, the container's mount named "state")."""
    sts = workload(docs, "processor")
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "state"]
    return sts["spec"], pod, env, mount


@pytest.mark.parametrize("case", CASES)
def test_processor_state_is_a_volume_claim_template_per_pod(case):
    state = values(case)["processor"]["state"]
    assert state["enabled"] is True
    spec, pod, env, mount = processor_state(load(case))
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "state"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == state["size"] == "10Gi"
    assert "storageClassName" not in claim["spec"], "empty storageClassName: the cluster's default class"
    # The claim, not a pod volume, backs the mount.
    assert "state" not in {v["name"] for v in pod["volumes"]}
    assert mount["mountPath"] == STATE_MOUNT and not mount.get("readOnly")
    assert env["SWITCHBOARD_STATE_DIR"]["value"] == STATE_DIR
    assert STATE_DIR.startswith(STATE_MOUNT + "/")
    # uid 10001 with a read-only root filesystem writes the volume through its fsGroup.
    sc = pod["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["fsGroup"] == sc["runAsGroup"] == 10001


def test_processor_state_size_and_storage_class_come_from_values():
    docs = render({"processor": {"state": {"size": "50Gi", "storageClassName": "gp3"}}})
    kubernetes_validate.validate(workload(docs, "processor"), "1.30.0", strict=True)
    spec, _, _, _ = processor_state(docs)
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert claim["spec"]["storageClassName"] == "gp3"


def test_processor_state_disabled_is_an_empty_dir():
    docs = render({"processor": {"state": {"enabled": False, "size": "5Gi"}}})
    # scripts/deploy-check validates the default and production renders; this one here.
    kubernetes_validate.validate(workload(docs, "processor"), "1.30.0", strict=True)
    spec, pod, env, mount = processor_state(docs)
    assert "volumeClaimTemplates" not in spec
    (volume,) = [v for v in pod["volumes"] if v["name"] == "state"]
    assert volume["emptyDir"] == {"sizeLimit": "5Gi"}
    assert mount["mountPath"] == STATE_MOUNT
    assert env["SWITCHBOARD_STATE_DIR"]["value"] == STATE_DIR


def test_only_the_processor_has_a_state_volume():
    docs = load("production")
    assert enabled("production", "actions")
    for component in SERVICES:
        if component == "processor" or not enabled("production", component):
            continue
        spec = workload(docs, component)["spec"]
        assert "volumeClaimTemplates" not in spec, component
        (container,) = spec["template"]["spec"]["containers"]
        assert "SWITCHBOARD_STATE_DIR" not in {e["name"] for e in container["env"]}, component


def processor_toml(docs):
    config = next(c for c in find(docs, "ConfigMap") if c["metadata"]["name"].endswith("-config"))
    return config["data"]["processor.toml"]


def dedup_retention_ms(docs):
    (topics_cm,) = find(docs, "ConfigMap", "topics")
    (line,) = [line.split() for line in topics_cm["data"]["topics"].splitlines() if line.startswith("switchboard.processor.dedup ")]
    (retention,) = [c for c in line if c.startswith("retention.ms=")]
    return int(retention.removeprefix("retention.ms="))


@pytest.mark.parametrize("case", CASES)
def test_state_cache_and_source_windows_are_the_processors_defaults_unless_set(case):
    docs = load(case)
    toml = processor_toml(docs)
    assert "state_cache" not in toml and "dedup_window_" not in toml
    # The longest default window (generic, 7d) and dedupWindow (7d).
    assert dedup_retention_ms(docs) == 7 * 86_400_000


def test_state_cache_and_source_windows_reach_the_processor_config():
    docs = render({"processor": {
        "dedupWindow": "1d",
        "dedupWindows": {"twilio": "12h", "stripe": "", "calendly": "3d", "generic": "14d"},
        "state": {"cache": 268435456},
    }})
    toml = processor_toml(docs)
    assert 'dedup_window = "1d"\n' in toml
    assert 'dedup_window_twilio = "12h"\n' in toml
    assert 'dedup_window_calendly = "3d"\n' in toml
    assert 'dedup_window_generic = "14d"\n' in toml
    assert "dedup_window_stripe" not in toml
    assert "state_cache = 268435456\n" in toml
    # The dedup changelog keeps the longest window: generic's 14 days.
    assert dedup_retention_ms(docs) == 14 * 86_400_000
    # Shorter windows everywhere: still the processor's default for stripe (4d), which is unset.
    short = render({"processor": {"dedupWindow": "1h", "dedupWindows": {
        "twilio": "1h", "stripe": "", "calendly": "1h", "generic": "1h"}}})
    assert dedup_retention_ms(short) == 4 * 86_400_000


@pytest.mark.parametrize(
    "override",
    [
        {"processor": {"state": {"size": "lots"}}},
        {"processor": {"state": {"cache": -1}}},
        {"processor": {"state": {"cache": "64MiB"}}},
        {"processor": {"state": {"sizeLimit": "1Gi"}}},
        {"processor": {"dedupWindows": {"twilio": "one day"}}},
        {"processor": {"dedupWindows": {"zoom": "1d"}}},
    ],
)
def test_invalid_state_values_are_rejected_by_the_schema(override):
    with helm_python.Chart.load(CHART) as chart:
        # The same keys with valid values pass: the failure below is the value's.
        chart.validate_schema({"processor": {
            "state": {"enabled": False, "size": "1.5Gi", "storageClassName": "gp3", "cache": 1 << 28},
            "dedupWindows": {"twilio": "2d", "stripe": "", "calendly": "36h", "generic": "7d"},
        }})
        with pytest.raises(helm_python.HelmValuesError):
            chart.validate_schema(override)
