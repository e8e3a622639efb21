"""Render the Herald chart offline and validate everything it produces.

Run through .ci/helm-check, which installs the pinned tools first. Checks, for the default
values and each file under helm/herald/ci/:

- helm lint (strict) and values.schema.json, through Helm's Go SDK (helm-python-sdk);
- every built-in manifest against the Kubernetes JSON schemas of the oldest and newest
  supported releases (kubernetes-validate, strict: unknown fields fail);
- custom resources are collected for helm-check-crds.mjs, which validates them against
  the prometheus-operator and KEDA models;
- herald.toml parses, uses only keys of config/default.toml, contains no inline secret
  and agrees with terminationGracePeriodSeconds;
- every PromQL expression, in alerts and in the dashboard, parses.

It also checks that values which must fail do fail, that the schema's config keys match
config/default.toml, and that the chart's dashboard copy equals docs/grafana.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import promql_parser
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "herald"
DEFAULT_TOML = ROOT / "config" / "default.toml"
DASHBOARD = ROOT / "docs" / "grafana" / "herald-dashboard.json"
CHART_DASHBOARD = CHART / "files" / "herald-dashboard.json"

# Oldest Kubernetes release the chart supports (Chart.yaml kubeVersion) and the newest
# that kubernetes-validate ships schemas for.
KUBE_VERSIONS = ["1.27", kubernetes_validate.utils.latest_version()]
CUSTOM_GROUPS = ("monitoring.coreos.com/", "keda.sh/")
# Config keys whose values are secrets. The chart must never render them into herald.toml.
INLINE_SECRET_KEYS = {
    "api_key",
    "auth_token",
    "service_account_json",
    "password",
    "recipient_hash_key",
    "signing_secrets",
    "secret_access_key",
    "session_token",
    "api_secret",
    "private_key",
    "vapid_private_key",
}
# Provider kinds that config/default.toml has no section for are documented by TOML
# examples in this file, which list every key of their kind.
CONFIG_DOC = ROOT / "docs" / "configuration.md"
# Providers that config/default.toml defines a section for.
BUILT_IN_PROVIDERS = ("sendgrid", "twilio", "fcm", "apns", "webpush", "smtp", "webhook")
# Keys that default.toml lists only as comments, because they have no default.
COMMENTED_KEYS = {
    "providers.sendgrid.api_key",
    "providers.sendgrid.api_key_file",
    "providers.twilio.auth_token",
    "providers.twilio.auth_token_file",
    "providers.fcm.service_account_json",
    "providers.fcm.service_account_file",
    "providers.smtp.password",
    "providers.smtp.password_file",
    "providers.apns.private_key",
    "providers.apns.private_key_file",
    "providers.webpush.vapid_private_key",
    "providers.webpush.vapid_private_key_file",
    "ledger.recipient_hash_key",
    "ledger.recipient_hash_key_file",
    "providers.webhook.signing_secrets",
    "providers.webhook.signing_secrets_file",
    "providers.webhook.endpoints.NAME.url",
    "providers.webhook.endpoints.NAME.signing_secrets",
    "providers.webhook.endpoints.NAME.signing_secrets_file",
    "providers.webhook.endpoints.NAME.headers",
}
# A provider's own circuit breaker keys, which default.toml describes only in a comment
# because each one falls back to [circuit_breaker].
COMMENTED_KEYS |= {
    f"providers.{provider}.circuit_breaker.{key}"
    for provider in ("sendgrid", "twilio", "fcm")
    for key in ("enabled", "failure_threshold", "window_secs", "cool_down_secs")
}
# Keys the chart renders itself from other values.
CHART_OWNED_KEYS = {"admin.listen", "shutdown.grace_period_secs"}

# Values that the schema or the templates must reject: a name for the case, the values, and
# a fragment the error must contain, so a check cannot pass on an unrelated failure.
MUST_FAIL = [
    (
        "HPA and KEDA together",
        {"autoscaling": {"enabled": True}, "keda": {"enabled": True}},
        "mutually exclusive",
    ),
    ("unknown log format", {"config": {"log": {"format": "xml"}}}, "/config/log/format"),
    (
        "inline provider secret",
        {"config": {"providers": {"sendgrid": {"api_key": "SG.x"}}}},
        "api_key",
    ),
    (
        "inline SMTP password",
        {"config": {"providers": {"smtp": {"password": "hunter2"}}}},
        "password",
    ),
    ("unknown SMTP TLS mode", {"config": {"providers": {"smtp": {"tls": "ssl"}}}}, "/config/providers/smtp/tls"),
    (
        "inline webhook signing secret",
        {"config": {"providers": {"webhook": {"endpoints": {"billing": {"signing_secrets": "whsec_x"}}}}}},
        "signing_secrets",
    ),
    (
        "inline secret of a provider kind without a default section",
        {"config": {"providers": {"ses": {"kind": "ses", "secret_access_key": "x"}}}},
        "secret_access_key",
    ),
    (
        "inline APNs signing key",
        {"config": {"providers": {"apns": {"private_key": "-----BEGIN PRIVATE KEY-----"}}}},
        "private_key",
    ),
    (
        "inline VAPID key",
        {"config": {"providers": {"webpush": {"vapid_private_key": "x"}}}},
        "vapid_private_key",
    ),
    ("text where a number belongs", {"config": {"pool": {"workers": "many"}}}, "/config/pool/workers"),
    ("unknown config section", {"config": {"ledgr": {"url": "postgres://x"}}}, "ledgr"),
    ("chart-owned admin section", {"config": {"admin": {"listen": "0.0.0.0:1"}}}, "admin"),
    (
        "secret both as env and file",
        {"secrets": {"env": [{"key": "k", "configKey": "providers.sendgrid.api_key"}]}},
        "accepts only one of the two",
    ),
    (
        "file binding without _file key",
        {"secrets": {"files": [{"key": "k", "configKey": "providers.sendgrid.api_key"}]}},
        "/secrets/files/0/configKey",
    ),
    (
        "neither existing nor created Secret",
        {"secrets": {"existingSecret": ""}},
        "secrets.existingSecret is required",
    ),
]


class Report:
    """Collects failures so one run shows all of them."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def ok(self, message: str) -> None:
        print(f"ok    {message}")

    def error(self, message: str) -> None:
        print(f"ERROR {message}")
        self.errors.append(message)

    def check(self, condition: bool, message: str, detail: str = "") -> None:
        if condition:
            self.ok(message)
        else:
            self.error(f"{message}: {detail}" if detail else message)


def flatten_keys(table: dict, prefix: str = "") -> set[str]:
    """Return the dotted paths of every non-table value in a TOML document."""
    keys = set()
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            keys |= flatten_keys(value, f"{path}.")
        else:
            keys.add(path)
    return keys


def generic_key(key: str) -> str:
    """Return `key` with user-chosen names replaced: a webhook endpoint's name by NAME, and
    everything below `headers` cut, so it can be compared with the documented keys."""
    parts = key.split(".")
    if len(parts) > 3 and parts[0] == "providers" and parts[2] == "endpoints":
        parts[3] = "NAME"
    if "headers" in parts:
        parts = parts[: parts.index("headers") + 1]
    return ".".join(parts)


def default_toml_keys() -> set[str]:
    defaults = tomllib.loads(DEFAULT_TOML.read_text())
    return flatten_keys(defaults) | COMMENTED_KEYS


def documented_kind_keys() -> set[str]:
    """Return providers.KIND.key for every provider in docs/configuration.md's TOML examples.

    Keys shown commented out (`# api_key = ""`) count too, because the examples list
    secrets that way.
    """
    keys = set()
    for block in re.findall(r"```toml\n(.*?)```", CONFIG_DOC.read_text(), re.S):
        table = tomllib.loads(re.sub(r"^# (\w+ = )", r"\1", block, flags=re.M))
        for provider in table.get("providers", {}).values():
            # Sections without a kind extend a built-in provider, whose keys default.toml lists.
            if "kind" not in provider:
                continue
            keys |= {f"providers.{provider['kind']}.{key}" for key in flatten_keys(provider)}
    return keys


def schema_config_keys(schema: dict) -> set[str]:
    """Return the dotted config keys the schema accepts under the default provider names."""

    def walk(node: dict, prefix: str) -> set[str]:
        keys = set()
        for key, child in node.get("properties", {}).items():
            path = f"{prefix}{key}"
            if "properties" in child:
                keys |= walk(child, f"{path}.")
            elif len(child.get("patternProperties", {})) == 1:
                # A map of user-chosen names, such as webhook endpoints.
                (entry,) = child["patternProperties"].values()
                keys |= walk(entry, f"{path}.NAME.")
            else:
                keys.add(path)
        return keys

    return walk(schema["properties"]["config"], "")


def render(chart: helm.Chart, values: dict) -> dict[str, str]:
    return chart.render(values=values, name="herald", namespace="notify", is_install=True)


def manifests(rendered: dict[str, str]) -> list[tuple[str, dict]]:
    """Split rendered templates into (template, object) pairs, leaving out NOTES.txt."""
    objects = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                objects.append((template.split("/", 1)[1], document))
    return objects


def check_kubernetes(report: Report, label: str, objects: list[tuple[str, dict]], crds: list) -> None:
    for template, obj in objects:
        name = f"{label}: {obj['kind']}/{obj['metadata']['name']}"
        if obj["apiVersion"].startswith(CUSTOM_GROUPS):
            crds.append({"source": label, "object": obj})
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(part) for part in error.path)
                report.error(f"{name} is invalid for Kubernetes {version} at {path}: {error.message}")
                break
            except kubernetes_validate.SchemaNotFoundError as error:
                report.error(f"{name}: {error.message}")
                break
        else:
            report.ok(f"{name} (Kubernetes {', '.join(KUBE_VERSIONS)})")


def check_promql(report: Report, where: str, expression: str) -> None:
    try:
        promql_parser.parse(expression)
    except ValueError as error:
        report.error(f"{where}: PromQL does not parse: {error}: {expression}")


def find(objects: list[tuple[str, dict]], kind: str, name_suffix: str = "") -> list[dict]:
    return [
        obj for _, obj in objects
        if obj["kind"] == kind and obj["metadata"]["name"].endswith(name_suffix)
    ]


def check_config(report: Report, label: str, objects: list[tuple[str, dict]], known: set[str]) -> None:
    deployment = find(objects, "Deployment")[0]
    for config_map in find(objects, "ConfigMap"):
        if "herald.toml" not in config_map.get("data", {}):
            continue
        name = f"{label}: ConfigMap/{config_map['metadata']['name']}"
        try:
            rendered = tomllib.loads(config_map["data"]["herald.toml"])
        except tomllib.TOMLDecodeError as error:
            report.error(f"{name}: herald.toml does not parse: {error}")
            continue
        keys = flatten_keys(rendered)
        # Providers other than those default.toml defines are compared by their kind's keys.
        unknown = set()
        for key in keys:
            parts = key.split(".")
            if parts[0] == "providers" and parts[1] not in BUILT_IN_PROVIDERS:
                kind = rendered["providers"][parts[1]].get("kind", "")
                key = ".".join(["providers", kind] + parts[2:]) if kind else "providers.kind"
            if generic_key(key) not in known:
                unknown.add(key)
        report.check(not unknown, f"{name}: herald.toml uses only Herald's keys", f"unknown {sorted(unknown)}")
        inline = sorted(k for k in keys if k.split(".")[-1] in INLINE_SECRET_KEYS)
        report.check(not inline, f"{name}: herald.toml contains no inline secret", f"found {inline}")
        grace = rendered["shutdown"]["grace_period_secs"]
        termination = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        report.check(
            termination > grace,
            f"{name}: terminationGracePeriodSeconds {termination} exceeds grace_period_secs {grace}",
        )
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    report.check("checksum/config" in annotations, f"{label}: Deployment rolls on config changes")


def check_rules(report: Report, label: str, objects: list[tuple[str, dict]]) -> None:
    for rule_object in find(objects, "PrometheusRule"):
        for group in rule_object["spec"]["groups"]:
            for rule in group["rules"]:
                check_promql(report, f"{label}: alert {rule['alert']}", rule["expr"])
        report.ok(f"{label}: PrometheusRule expressions parse")


def dashboard_expressions(dashboard: dict) -> list[tuple[str, str]]:
    """Return (panel title, expression) for every query, Grafana variables replaced."""
    substitutions = {
        "$__rate_interval": "5m",
        "$__interval": "1m",
        "$__range": "1h",
    }
    found = []
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            expression = target.get("expr", "")
            for variable, value in substitutions.items():
                expression = expression.replace(variable, value)
            expression = re.sub(r"\$\{?(\w+)\}?", "x", expression)
            found.append((panel.get("title", "?"), expression))
    return found


def check_dashboard(report: Report) -> None:
    report.check(
        DASHBOARD.read_bytes() == CHART_DASHBOARD.read_bytes(),
        "helm/herald/files/herald-dashboard.json equals docs/grafana/herald-dashboard.json",
        "copy docs/grafana/herald-dashboard.json over the chart's copy",
    )
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = dashboard_expressions(dashboard)
    for title, expression in expressions:
        check_promql(report, f"dashboard panel {title!r}", expression)
    report.ok(f"dashboard: {len(expressions)} queries checked")


def check_chart_defaults(report: Report, chart: helm.Chart) -> None:
    """Compare the Herald defaults the templates repeat with config/default.toml."""
    defaults = tomllib.loads(DEFAULT_TOML.read_text())
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    caps = re.search(r'\$caps := dict ((?:"\w+" \d+ ?)+)', helpers)
    pairs = re.findall(r'"(\w+)" (\d+)', caps.group(1)) if caps else []
    expected = {name: p["max_in_flight"] for name, p in defaults["providers"].items()}
    report.check(
        {name: int(cap) for name, cap in pairs} == expected,
        "herald.maxInFlight defaults match config/default.toml",
        f"template {pairs}, default.toml {expected}",
    )
    report.check(
        f'"{defaults["broker"]["queue"]}"' in helpers,
        "herald.queueName default matches broker.queue in config/default.toml",
    )
    values = chart.values
    report.check(
        values["shutdown"]["gracePeriodSeconds"] == defaults["shutdown"]["grace_period_secs"],
        "shutdown.gracePeriodSeconds default matches config/default.toml",
    )


def check_schema_keys(report: Report, chart: helm.Chart, known: set[str]) -> None:
    accepted = schema_config_keys(chart.schema)
    expected = {key for key in known if key not in CHART_OWNED_KEYS}
    expected = {key for key in expected if key.split(".")[-1] not in INLINE_SECRET_KEYS}
    # The schema also lists `kind` under each provider, which default.toml sets too.
    report.check(
        accepted == expected,
        "values.schema.json config keys equal config/default.toml's",
        f"only in schema {sorted(accepted - expected)}, only in default.toml {sorted(expected - accepted)}",
    )


def check_must_fail(report: Report, chart: helm.Chart) -> None:
    for reason, values, fragment in MUST_FAIL:
        try:
            chart.validate_schema(values)
            render(chart, values)
        except helm.HelmError as error:
            report.check(
                fragment in str(error),
                f"rejected as expected ({reason})",
                f"the error does not mention {fragment!r}: {error}",
            )
        else:
            report.error(f"values were accepted but must fail ({reason}): {values}")


def check_lint(report: Report, label: str, values: dict) -> None:
    result = helm.lint(CHART, values, strict=True, kube_version="v1.27.0")
    problems = [m for m in result["messages"] if m["severity"] >= 2] + [
        {"path": "", "error": e} for e in result["errors"]
    ]
    for problem in problems:
        report.error(f"{label}: helm lint: {problem['path']}: {problem['error']}")
    if not problems:
        report.ok(f"{label}: helm lint --strict")


def main() -> int:
    crd_output = Path(sys.argv[1])
    report = Report()
    known = default_toml_keys()
    value_sets = {"default values": {}}
    for path in sorted((CHART / "ci").glob("*.yaml")):
        value_sets[f"ci/{path.name}"] = yaml.safe_load(path.read_text()) or {}

    print(f"Helm SDK {helm.helm_sdk_version()}, kubernetes-validate {kubernetes_validate.__version__}")
    crds: list = []
    with helm.Chart.load(CHART) as chart:
        for label, values in value_sets.items():
            check_lint(report, label, values)
            try:
                chart.validate_schema(values)
                rendered = render(chart, values)
            except helm.HelmError as error:
                report.error(f"{label}: rendering failed: {error}")
                continue
            objects = manifests(rendered)
            check_kubernetes(report, label, objects, crds)
            check_config(report, label, objects, known | documented_kind_keys())
            check_rules(report, label, objects)
        check_must_fail(report, chart)
        check_schema_keys(report, chart, known)
        check_chart_defaults(report, chart)
    check_dashboard(report)

    crd_output.write_text(json.dumps(crds))
    if report.errors:
        print(f"\n{len(report.errors)} chart checks failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
