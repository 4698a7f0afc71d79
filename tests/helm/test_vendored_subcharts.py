"""The vendored subcharts (helm/cscale-hub/charts/*.tgz): what a fresh clone lints and renders.

The archives are committed (helm/subcharts/README.md says why and how they are rebuilt), so
`helm lint --strict` and `helm template` need no chart repository. Checked here with the REAL
z2jh 4.4.0 and dask-gateway 2026.3.0 charts: the archives are the versions Chart.lock pins and
carry no unreleased placeholders; the chart lints strictly from a copy of the committed files;
every rendered object is valid (strict: unknown fields refused) for every Kubernetes version
from the chart's kubeVersion minimum to the newest kubernetes-validate knows; and every pod
meets Pod Security ``restricted`` — except the three dask-gateway pods whose securityContext
that chart does not let values set, listed here as the known gap (docs/deploy.md).
"""

from __future__ import annotations

import contextlib
import shutil
import tarfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "cscale-hub"
EXAMPLES = [None, "production", "workshop"]


def _pinned() -> dict[str, str]:
    lock = yaml.safe_load((CHART / "Chart.lock").read_text())
    return {d["name"]: d["version"] for d in lock["dependencies"]}


def test_archives_are_the_pinned_releases():
    pinned = _pinned()
    archives = sorted((CHART / "charts").glob("*.tgz"))
    assert {a.name for a in archives} == {f"{n}-{v}.tgz" for n, v in pinned.items()}
    for archive in archives:
        with tarfile.open(archive) as tar:
            name = archive.name.rsplit("-", 1)[0]
            meta = yaml.safe_load(tar.extractfile(f"{name}/Chart.yaml").read())
            assert meta["version"] == pinned[name]
            values = tar.extractfile(f"{name}/values.yaml").read().decode()
            assert "set-by-chartpress" not in values, f"{archive.name}: unreleased image tags"
            assert f"{name}/values.schema.json" in tar.getnames(), "helm validates values"


@pytest.fixture(scope="module")
def fresh_chart(tmp_path_factory) -> Path:
    """The chart as a fresh clone has it (charts/ included)."""
    root = tmp_path_factory.mktemp("fresh")
    dest = root / "helm" / "cscale-hub"
    shutil.copytree(CHART, dest, symlinks=True)
    return dest


@pytest.mark.parametrize("example", EXAMPLES)
def test_helm_lint_strict_on_a_fresh_clone(run, fresh_chart, example):
    args = ["lint", "--strict", str(fresh_chart)]
    if example:
        args += ["-f", str(CHART / "examples" / f"{example}.yaml")]
    out = run(*args)
    assert "0 chart(s) failed" in out


def _supported_versions() -> list[str]:
    minimum = (1, 30)
    found = {tuple(int(x) for x in v.split(".")[:2]) for v in kv_utils.all_versions()}
    return [f"{a}.{b}" for a, b in sorted(found) if (a, b) >= minimum]


_RENDERED: dict[str | None, list[dict[str, Any]]] = {}


def _render(run, chart: Path, example: str | None) -> list[dict[str, Any]]:
    if example in _RENDERED:
        return _RENDERED[example]
    args = ["template", "cscale", str(chart), "-n", "cscale"]
    if example:
        args += ["-f", str(CHART / "examples" / f"{example}.yaml")]
    _RENDERED[example] = [d for d in yaml.safe_load_all(run(*args)) if d]
    return _RENDERED[example]


@pytest.mark.parametrize("example", EXAMPLES)
def test_valid_for_every_supported_kubernetes_version(run, fresh_chart, example):
    objs = _render(run, fresh_chart, example)
    versions = _supported_versions()
    assert versions[0] == "1.30" and len(versions) >= 4
    for version in versions:
        checked = 0
        for o in objs:
            try:
                kubernetes_validate.validate(o, version, strict=True)
                checked += 1
            except kubernetes_validate.SchemaNotFoundError:
                # CRD instances (traefik IngressRoute/Middleware, DaskCluster) have no schema
                assert o["apiVersion"].startswith(("traefik.", "gateway.dask.org")), o["kind"]
            except kubernetes_validate.ValidationError as exc:
                name = f"{o['kind']}/{o['metadata']['name']}"
                raise AssertionError(f"{version} {name}: {exc}") from None
        assert checked > 40, version


def pod_specs(objs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every workload and pod template rendered."""
    out = []
    for o in objs:
        spec = o.get("spec") or {}
        if o["kind"] == "Pod":
            out.append((f"Pod/{o['metadata']['name']}", spec))
        elif o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
            out.append((f"{o['kind']}/{o['metadata']['name']}", spec["template"]["spec"]))
        elif o["kind"] == "CronJob":
            out.append(
                (
                    f"CronJob/{o['metadata']['name']}",
                    spec["jobTemplate"]["spec"]["template"]["spec"],
                )
            )
    return out


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What breaks Pod Security ``restricted`` (the Kubernetes Pod Security Standards):
    host namespaces/ports/paths, privileged, added capabilities other than NET_BIND_SERVICE,
    all capabilities not dropped, privilege escalation allowed, root or runAsNonRoot unset,
    seccomp not RuntimeDefault/Localhost, non-core volume types."""
    bad = []
    psc = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            bad.append(key)
    allowed_volumes = {
        "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
        "persistentVolumeClaim", "projected", "secret",
    }  # fmt: skip
    for v in pod.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= allowed_volumes:
            bad.append(f"volume {v['name']}: {sorted(kinds - allowed_volumes)}")
    containers = (pod.get("initContainers") or []) + (pod.get("containers") or [])
    for c in containers:
        sc = c.get("securityContext") or {}
        name = c["name"]
        if sc.get("privileged"):
            bad.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation not false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            bad.append(f"{name}: capabilities not dropped")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name}: adds {caps['add']}")
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if non_root is not True:
            bad.append(f"{name}: runAsNonRoot not true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            bad.append(f"{name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: seccompProfile {seccomp}")
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                bad.append(f"{name}: hostPort")
    return bad


# dask-gateway 2026.3.0 renders these without a securityContext that values could set; the
# post-renderer helm/post-render.py closes them (test below). Listed so that a new gap fails
# here.
KNOWN_GAPS = {
    "Deployment/controller-cscale-dask-gateway",
    "Deployment/api-cscale-dask-gateway",
    "Deployment/traefik-cscale-dask-gateway",
}


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_pod_is_pod_security_restricted(run, fresh_chart, example):
    failing = {}
    for name, pod in pod_specs(_render(run, fresh_chart, example)):
        bad = restricted_violations(pod)
        if bad:
            failing[name] = bad
    assert set(failing) <= KNOWN_GAPS, {k: v for k, v in failing.items() if k not in KNOWN_GAPS}
    # a gap that closed (e.g. a new dask-gateway release) must leave KNOWN_GAPS too
    assert set(failing) == KNOWN_GAPS, f"no longer failing: {KNOWN_GAPS - set(failing)}"


POST_RENDERER = REPO / "helm" / "post-render.py"


@pytest.mark.parametrize("example", EXAMPLES)
def test_post_renderer_leaves_no_pod_security_gap(run, fresh_chart, example, monkeypatch):
    """``helm template --post-renderer helm/post-render.py`` (helm runs the script itself;
    its python3 is this environment's, which has PyYAML): every pod restricted, KNOWN_GAPS
    empty; traefik watches only the release namespace; nothing else changed."""
    import os
    import sys

    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    args = ["template", "cscale", str(fresh_chart), "-n", "cscale"]
    if example:
        args += ["-f", str(CHART / "examples" / f"{example}.yaml")]
    objs = [d for d in yaml.safe_load_all(run(*args, "--post-renderer", str(POST_RENDERER))) if d]
    failing = {n: bad for n, pod in pod_specs(objs) if (bad := restricted_violations(pod))}
    assert failing == {}
    for o in objs:
        with contextlib.suppress(kubernetes_validate.SchemaNotFoundError):
            kubernetes_validate.validate(o, "1.31", strict=True)
    traefik = next(
        o
        for o in objs
        if o["metadata"]["name"] == "traefik-cscale-dask-gateway" and o["kind"] == "Deployment"
    )
    targs = traefik["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--providers.kubernetescrd.namespaces=cscale" in targs
    # nothing else changed: the same render through the script, object by object
    import importlib.util

    spec = importlib.util.spec_from_file_location("post_render", POST_RENDERER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = run(*args)
    plain = [d for d in yaml.safe_load_all(text) if d]
    after = [d for d in yaml.safe_load_all(module.post_render(text)) if d]
    touched = {f"Deployment/{c}-cscale-dask-gateway" for c in ("controller", "api", "traefik")}
    touched.add("Deployment/hub")  # the settings checksum
    touched.add("ConfigMap/controller-cscale-dask-gateway")  # dashboards' owner check first

    def key(o):
        return f"{o['kind']}/{o['metadata']['name']}"

    assert [key(o) for o in after] == [key(o) for o in plain]
    assert [o for o in after if key(o) not in touched] == [
        o for o in plain if key(o) not in touched
    ]
    assert all(o != p for o, p in zip(after, plain, strict=True) if key(o) in touched)


def test_post_renderer_rolls_hub_and_gateway_out_when_settings_change(run, fresh_chart):
    """Before: the hub and the gateway api read cscale-settings only at start, and nothing in
    their pod templates changed with it, so `helm upgrade` left them on the old settings."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("post_render", POST_RENDERER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def checksums(*extra):
        text = run("template", "cscale", str(fresh_chart), "-n", "cscale", *extra)
        objs = [d for d in yaml.safe_load_all(module.post_render(text)) if d]
        return {
            o["metadata"]["name"]: o["spec"]["template"]["metadata"]["annotations"].get(
                "cscale.eu/settings-checksum"
            )
            for o in objs
            if o["kind"] == "Deployment"
            and o["metadata"]["name"] in ("hub", "api-cscale-dask-gateway")
        }

    before, again = checksums(), checksums()
    changed = checksums("--set", "cscale.hub.log_level=DEBUG")
    assert set(before) == {"hub", "api-cscale-dask-gateway"} and all(before.values())
    assert before == again  # stable: no rollout without a change
    assert all(changed[n] != before[n] for n in before)
