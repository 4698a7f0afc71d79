"""Render the chart with a real helm binary and STUB subcharts (see conftest).

Covers our templates, values.schema.json and consistency checks, and validates every object
we render against the Kubernetes 1.31 OpenAPI schemas (kubernetes-validate, strict, offline).
Not covered: anything the z2jh / dask-gateway charts render (they are stubs here).
"""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from cscale_extensions import config as settings

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "cscale-hub"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
VALUE_SETS = [[]] + [[p] for p in EXAMPLES]
IDS = ["defaults"] + [p.stem for p in EXAMPLES]


def test_examples_exist():
    assert {p.stem for p in EXAMPLES} >= {"production", "workshop"}


@pytest.mark.parametrize("values", VALUE_SETS, ids=IDS)
def test_lint_strict_with_stub_subcharts(run, chart_copy, values):
    args = ["lint", "--strict", str(chart_copy)]
    for v in values:
        args += ["-f", str(v)]
    out = run(*args)
    assert "1 chart(s) linted, 0 chart(s) failed" in out


@pytest.mark.parametrize("values", VALUE_SETS, ids=IDS)
def test_rendered_objects_valid_for_kubernetes_1_31_with_stub_subcharts(render, values):
    objs = render(*values)
    kinds = sorted({o["kind"] for o in objs})
    assert {"ConfigMap", "Deployment", "Service", "NetworkPolicy", "Secret"} <= set(kinds)
    for o in objs:
        if o["apiVersion"].startswith("traefik.io/"):
            continue  # a CRD kubernetes-validate lacks: test_kube_dashboards.py checks its schema
        kubernetes_validate.validate(o, "1.31", strict=True)


def test_kubernetes_validate_rejects_a_bad_object(render, obj):
    """The validator is strict: a misspelt field fails (so the test above can fail)."""
    dep = obj(render(), "Deployment", "cscale-eo-mqs")
    dep["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, "1.31", strict=True)


def test_the_chart_carries_no_copy_of_our_code(render):
    """The hub and gateway run the installed package (their extraConfig calls it): no
    ConfigMap of Python source, no file of the chart links into the repository."""
    config_maps = [o for o in render() if o["kind"] == "ConfigMap"]
    assert [o["metadata"]["name"] for o in config_maps] == ["cscale-settings"]
    assert not [p for p in CHART.rglob("*") if p.is_symlink()]
    assert not (CHART / "files").exists()


@pytest.mark.parametrize("values", VALUE_SETS, ids=IDS)
def test_settings_configmap_is_a_valid_platform_configuration(render, obj, values, tmp_path):
    """What the hub, gateway and EO-MQS read passes the settings model, as the chart meant it."""
    text = obj(render(*values), "ConfigMap", "cscale-settings")["data"]["config.yaml"]
    path = tmp_path / "config.yaml"
    path.write_text(text)
    cfg = settings.load(path)
    assert cfg["platform"]["deployment"] == "kubernetes"
    assert cfg["spawner"]["backend"] == "kubernetes"
    assert cfg["dask_gateway"]["backend"] == "kubernetes"
    for v in values:
        _assert_contains(cfg, yaml.safe_load(v.read_text())["cscale"], "cscale")


def _assert_contains(got, wanted, where: str) -> None:
    if isinstance(wanted, dict):
        for key, value in wanted.items():
            _assert_contains(got[key], value, f"{where}.{key}")
    else:
        assert got == wanted, where


def _deployments(objs):
    return [o for o in objs if o["kind"] == "Deployment"]


@pytest.mark.parametrize("values", VALUE_SETS, ids=IDS)
def test_our_pods_are_non_root_read_only_without_capabilities(render, values):
    deps = _deployments(render(*values))
    assert deps
    for dep in deps:
        spec = dep["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] >= 1000
        assert spec["automountServiceAccountToken"] is False
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]
            assert "livenessProbe" in c and "readinessProbe" in c


def test_eomqs_deployment_runs_the_documented_command_as_hub_service(render, obj):
    objs = render()
    c = obj(objs, "Deployment", "cscale-eo-mqs")["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == [
        "python",
        "-m",
        "cscale_extensions.services.eomqs",
        "--config",
        "/etc/cscale/config.yaml",
        "--port",
        "8080",
        "--ip",
        "0.0.0.0",  # the module's default 127.0.0.1 is unreachable through the Service
    ]
    env = {e["name"]: e for e in c["env"]}
    assert env["CSCALE_HUB_CONFIG"]["value"] == "/etc/cscale/config.yaml"
    assert env["JUPYTERHUB_SERVICE_PREFIX"]["value"] == "/services/eo-mqs/"
    assert env["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "hub",
        "key": "hub.services.eo-mqs.apiToken",
    }
    svc = obj(objs, "Service", "cscale-eo-mqs")
    assert svc["spec"]["ports"][0]["port"] == 8080
    # the hub routes /services/eo-mqs/ to exactly that Service
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["jupyterhub"]["hub"]["services"]["eo-mqs"]["url"] == "http://cscale-eo-mqs:8080"
    runs = obj(objs, "Deployment", "cscale-runs")["spec"]["template"]["spec"]["containers"][0]
    assert runs["command"] == ["python", "-m", "cscale_extensions.services.runs"]
    assert runs["args"] == [
        "--ip=0.0.0.0",
        "--port=8080",
        "--state-dir=/var/lib/cscale-hub/runs",
        "--proxy-url=http://proxy-public",
    ]
    renv = {e["name"]: e for e in runs["env"]}
    assert json.loads(renv["CSCALE_RUNS_SETTINGS"]["value"])["server_name"] == "runs"


def test_network_policy_admits_only_proxy_hub_and_user_servers(render, obj):
    np = obj(render(), "NetworkPolicy", "cscale-eo-mqs")["spec"]
    assert np["policyTypes"] == ["Ingress", "Egress"]
    (rule,) = np["ingress"]
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchExpressions"][0]["values"] == [
        "proxy",
        "hub",
        "singleuser-server",
    ]
    runs = obj(render(), "NetworkPolicy", "cscale-runs")["spec"]
    assert not any("ipBlock" in str(e) for e in runs["egress"]), (
        "runs has no public egress by default"
    )


def test_network_policies_can_be_turned_off(render):
    kinds = {o["kind"] for o in render(set=["networkPolicy.enabled=false"])}
    assert "NetworkPolicy" not in kinds


def test_oidc_secret_rendered_only_when_asked(render, obj, helm_error):
    assert not [
        o for o in render() if o["kind"] == "Secret" and o["metadata"]["name"] == "cscale-oidc"
    ]
    sec = obj(
        render(set=["oidc.createSecret=true", "oidc.clientSecret=s3cret"]), "Secret", "cscale-oidc"
    )
    assert sec["stringData"]["client-secret"] == "s3cret"
    with pytest.raises(helm_error, match="oidc.clientSecret is empty"):
        render(set=["oidc.createSecret=true"])


def test_pod_template_changes_when_settings_change(render, obj):
    """helm upgrade with new settings restarts EO-MQS (checksum annotation)."""
    a = obj(render(), "Deployment", "cscale-eo-mqs")["spec"]["template"]["metadata"]["annotations"]
    b = obj(
        render(set=["cscale.culler.timeout=7200", "jupyterhub.cull.timeout=7200"]),
        "Deployment",
        "cscale-eo-mqs",
    )["spec"]["template"]["metadata"]["annotations"]
    assert a["checksum/settings"] != b["checksum/settings"]


def test_eomqs_replicas_share_one_token_secret_and_runs_keeps_state(render, obj):
    objs = render(CHART / "examples" / "production.yaml")
    dep = obj(objs, "Deployment", "cscale-eo-mqs")
    assert dep["spec"]["replicas"] == 2
    vol = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "token")
    assert vol["secret"]["secretName"] == "cscale-eomqs-token"
    mount = next(
        m
        for m in dep["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        if m["name"] == "token"
    )
    cfg = yaml.safe_load(obj(objs, "ConfigMap", "cscale-settings")["data"]["config.yaml"])
    path = cfg["eomqs"]["token_secret_file"]
    item = vol["secret"]["items"][0]
    assert path == f"{mount['mountPath']}/{item['path']}"
    assert len(obj(objs, "Secret", "cscale-eomqs-token")["data"]["token-secret"]) >= 48
    runs = obj(objs, "Deployment", "cscale-runs")
    assert runs["spec"]["strategy"]["type"] == "Recreate"
    data = next(v for v in runs["spec"]["template"]["spec"]["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"]["claimName"] == "cscale-runs-data"
    assert obj(objs, "PersistentVolumeClaim", "cscale-runs-data")["spec"]["accessModes"] == [
        "ReadWriteOnce"
    ]


def test_disabled_services_are_not_deployed(render):
    objs = render(set=["cscale.runs.enabled=false", "cscale.eomqs.enabled=false"])
    names = {o["metadata"]["name"] for o in objs}
    assert not {n for n in names if "runs" in n or "eo-mqs" in n}


BAD_VALUES = [
    ("cscale.kubernetes.uid=0", "cscale.kubernetes.uid"),
    ("cscale.spawner.backend=same-user", "cscale.spawner.backend"),
    ("cscale.platform.deployment=local", "cscale.platform.deployment"),
    ("cscale.federation.embedded_sites=true", "cscale.federation.embedded_sites"),
    ("cscale.kubernetes.storage.capacity=lots", "cscale.kubernetes.storage.capacity"),
    ("cscale.kubernetes.profiles[0].slug=Not_A_Slug", "cscale.kubernetes.profiles.0.slug"),
    ("cscale.culler.timeout=-5", "cscale.culler.timeout"),
    ("cscale.kubernetes.nodeSelector.x=y", "cscale.kubernetes"),
    ("cscale.auth.issuer=http://insecure.example", "cscale.auth.issuer"),
    ("cscale.auth.client_secret=leaked", "cscale.auth.client_secret"),
    ("cscale.hub.db_url=postgresql://x", "cscale.hub.db_url"),
    ("eomqs.replicas=0", "eomqs.replicas"),
    ("eomqs.port=80", "eomqs.port"),
    ("runs.image.pullPolicy=Sometimes", "runs.image.pullPolicy"),
    ("oidc.existingSecret=x", "oidc"),
    ("unknownTopLevel=1", "unknownTopLevel"),
]


@pytest.mark.parametrize(("setting", "key"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_schema_rejects_bad_value_naming_the_key(render, helm_error, setting, key):
    with pytest.raises(helm_error) as err:
        render(set=[setting])
    assert "don't meet the specifications of the schema" in err.value.stderr
    assert key in err.value.stderr


CHECKS = [
    (
        ["jupyterhub.cull.timeout=10"],
        "jupyterhub.cull.timeout (10) must equal cscale.culler.timeout",
    ),
    (
        ["cscale.culler.enabled=false"],
        "jupyterhub.cull.enabled (true) must equal cscale.culler.enabled",
    ),
    (["jupyterhub.singleuser.image.tag=other"], "jupyterhub.singleuser.image"),
    (["jupyterhub.singleuser.storage.type=dynamic"], "jupyterhub.singleuser.storage.type"),
    (
        ["jupyterhub.singleuser.cloudMetadata.blockWithIptables=true"],
        "blockWithIptables must be false",
    ),
    (
        ["jupyterhub.singleuser.networkPolicy.egressAllowRules.cloudMetadataServer=true"],
        "cloudMetadataServer must stay false",
    ),
    (
        [
            "cscale.kubernetes.profiles[0].slug=a",
            "cscale.kubernetes.profiles[0].display_name=A",
            "cscale.kubernetes.profiles[0].cpu_limit=1",
            "cscale.kubernetes.profiles[0].mem_limit=1G",
            "cscale.kubernetes.profiles[0].site=mars",
        ],
        'unknown site "mars"',
    ),
    (
        ["dask-gateway.enabled=false"],
        "dask-gateway.enabled (false) must equal cscale.dask_gateway.enabled",
    ),
    (["dask-gateway.gateway.auth.type=simple"], "dask-gateway.gateway.auth.type must be"),
    (["runs.replicas=2"], "runs.replicas > 1 needs cscale.runs.db_url"),
    (["jupyterhub.hub.allowNamedServers=false"], "jupyterhub.hub.allowNamedServers must be true"),
    (
        ["jupyterhub.hub.namedServerLimitPerUser=5"],
        "must equal cscale.hub.named_server_limit_per_user",
    ),
]


@pytest.mark.parametrize(("settings_", "message"), CHECKS, ids=[c[1][:40] for c in CHECKS])
def test_consistency_checks_stop_the_render(render, helm_error, settings_, message):
    with pytest.raises(helm_error) as err:
        render(set=settings_)
    assert message in err.value.stderr


def test_consistent_change_renders(render):
    """The checks compare, they do not pin: changing both sides together is accepted."""
    objs = render(
        set=[
            "cscale.culler.timeout=600",
            "jupyterhub.cull.timeout=600",
            "cscale.dask_gateway.enabled=false",
            "dask-gateway.enabled=false",
        ]
    )
    assert objs


def test_notes_render_with_stub_subcharts(chart_copy, run, tmp_path):
    """NOTES.txt is not rendered by `helm template`; render it through tpl in a scratch copy."""
    import shutil

    chart = tmp_path / "cscale-hub"
    shutil.copytree(chart_copy, chart)
    (chart / "files").mkdir()
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "files" / "notes.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data:\n  notes: {{ tpl (.Files.Get "files/notes.txt") . | quote }}\n'
    )
    out = run(
        "template",
        "t",
        str(chart),
        "-n",
        "cscale",
        "-f",
        str(CHART / "examples" / "workshop.yaml"),
        "--show-only",
        "templates/zz-notes.yaml",
    )
    notes = yaml.safe_load(out)["data"]["notes"]
    assert "https://workshop.c-scale.eu/" in notes
    assert "tiny-a, tiny-b, small-a, small-b, trainer" in notes
    assert "/services/runs/" not in notes


def test_user_servers_may_reach_our_services(render, obj):
    """z2jh's user-pod NetworkPolicy blocks private addresses; our values open exactly our
    service pods (by label and port) and the gateway's traefik."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    egress = values["jupyterhub"]["singleuser"]["networkPolicy"]["egress"]
    ours = next(e for e in egress if "cscale.eu/hub-service" in str(e))
    selector = ours["to"][0]["podSelector"]["matchLabels"]
    objs = render()
    for name in ("cscale-eo-mqs", "cscale-runs"):
        pod = obj(objs, "Deployment", name)["spec"]["template"]
        assert selector.items() <= pod["metadata"]["labels"].items(), name
        port = pod["spec"]["containers"][0]["ports"][0]["containerPort"]
        assert {"port": port, "protocol": "TCP"} in ours["ports"], name
