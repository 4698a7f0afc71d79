"""The three images really build, and run as the chart runs them (issue #20).

`images/build.sh --tool buildah` builds singleuser, hub and gateway; podman then runs the
hub, singleuser, EO-MQS and runs containers with what the chart (real z2jh 4.4.0 subchart,
vendored) renders for them: command, environment, mounted ConfigMaps/Secrets and the
securityContext (`--user`, `--read-only`, `--cap-drop ALL`, `no-new-privileges`).

Stand-ins, because there is no registry base and no Kubernetes here:
- base image: ``localhost/cscale-standin/python:3.11-slim-bookworm`` (images/standin-base.sh:
  debootstrap'ed Debian 12 with Debian's Python 3.11 (3.11.2) at /usr/local) for
  ``python:3.11-slim-bookworm`` (3.11.14); cached per machine, kept after the tests;
- the kubelet: rootful podman with runc on the host network; Kubernetes Services become
  127.0.0.1 (``--add-host`` for every rendered Service name) and free ports (the
  ``*_SERVICE_HOST/PORT`` environment, the hub's bind URL in an extra z2jh ``extraConfig``
  snippet, the services' ``--ip/--port`` and hub API URL): the only changes;
- ConfigMaps/Secrets: the rendered ones written to files and bind-mounted read-only; the
  operator's ``cscale-oidc`` Secret: a generated value; emptyDir/PVC volumes: temp dirs;
- z2jh's proxy pod: the configurable-http-proxy of node_modules (the one the local stack runs);
- the singleuser server is started as KubeSpawner would (its JUPYTERHUB_* environment, a token
  the hub issued for the user) and must answer its API through the hub's auth setup.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from cscale_extensions.net import free_port, http_ready, port_open, wait_for

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "cscale-hub"
RUNTIME = ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=32768:32768"]
USER_STACK = "dask, dask_gateway, odc.stac, pystac_client, rasterio, xarray, cscale_extensions.notebook"


def _sh(*argv: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} -> {result.returncode}\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="module")
def standin_base() -> str:
    """The stand-in base image (built once per machine by images/standin-base.sh)."""
    if os.getuid() != 0:
        pytest.fail("the container tests need root (rootful podman, debootstrap)")
    missing = [t for t in ("podman", "buildah", "runc", "debootstrap") if not shutil.which(t)]
    if missing:
        pytest.fail(f"missing {missing}: run scripts/setup.sh (scripts/apt-packages.txt)")
    return _sh(str(REPO / "images" / "standin-base.sh"), timeout=1800).stdout.strip()


@pytest.fixture(scope="module")
def images(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The three images built by images/build.sh from the stand-in base; removed afterwards.
    ``CSCALE_TEST_IMAGES=<registry>:<tag>`` uses images built before (e.g. by `make images
    STANDIN=1 IMAGES_ARGS="--registry localhost/dev --tag dev"`) and leaves them."""
    prebuilt = os.environ.get("CSCALE_TEST_IMAGES")
    registry, tag = prebuilt.rsplit(":", 1) if prebuilt else (
        "localhost/cscale-test", f"t{uuid.uuid4().hex[:10]}")
    names = {
        "singleuser": f"{registry}/cscale-hub-singleuser:{tag}",
        "hub": f"{registry}/cscale-hub:{tag}",
        "gateway": f"{registry}/cscale-hub-gateway:{tag}",
    }
    argv = [str(REPO / "images" / "build.sh"), "--tool", "buildah", "--unpinned",
            "--registry", registry, "--tag", tag]
    ca = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    if ca and Path(ca).is_file():  # TLS to PyPI intercepted on this machine
        argv += ["--ca-bundle", ca]
    if prebuilt:
        yield names
        return
    argv += ["--base", request.getfixturevalue("standin_base")]
    try:
        _sh(*argv, timeout=3600)
        yield names
    finally:
        for name in names.values():
            _sh("podman", "rmi", "-f", name, check=False)


@pytest.fixture(scope="module")
def rendered(run, tmp_path_factory) -> list[dict[str, Any]]:
    """The chart with its vendored real subcharts, default values."""
    out = run("template", "cscale", str(CHART), "-n", "cscale")
    return [d for d in yaml.safe_load_all(out) if d]


def _get(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


def _secret_data(objs: list[dict[str, Any]], name: str) -> dict[str, str] | None:
    found = [o for o in objs if o["kind"] == "Secret" and o["metadata"]["name"] == name]
    if not found:
        return None
    return {k: base64.b64decode(v).decode() for k, v in (found[0].get("data") or {}).items()}


class Pod:
    """One rendered Deployment's container as a podman container."""

    def __init__(self, objs: list[dict[str, Any]], deployment: str, workdir: Path,
                 container: str | None = None) -> None:
        self.objs = objs
        self.spec = _get(objs, "Deployment", deployment)["spec"]["template"]["spec"]
        boxes = self.spec["containers"]
        self.box = next(b for b in boxes if container in (None, b["name"]))
        self.workdir = workdir
        self.name = f"cscale-test-{deployment}-{uuid.uuid4().hex[:8]}"
        self.generated: dict[str, str] = {}

    def security(self) -> list[str]:
        """podman flags for the pod's and container's securityContext."""
        pod, box = self.spec.get("securityContext") or {}, self.box.get("securityContext") or {}
        uid = box.get("runAsUser", pod.get("runAsUser"))
        gid = box.get("runAsGroup", pod.get("runAsGroup"))
        flags = []
        if uid is not None:
            flags += ["--user", f"{uid}:{gid if gid is not None else 0}"]
        if "fsGroup" in pod:
            flags += ["--group-add", str(pod["fsGroup"])]
        if box.get("readOnlyRootFilesystem"):
            flags.append("--read-only")
        if "ALL" in (box.get("capabilities") or {}).get("drop", []):
            flags += ["--cap-drop", "ALL"]
        if box.get("allowPrivilegeEscalation") is False:
            flags += ["--security-opt", "no-new-privileges"]
        return flags

    def owner(self) -> tuple[int, int]:
        pod, box = self.spec.get("securityContext") or {}, self.box.get("securityContext") or {}
        return box.get("runAsUser", pod.get("runAsUser", 0)), pod.get("fsGroup", 0)

    def env(self, overrides: dict[str, str]) -> dict[str, str]:
        env = {}
        for e in self.box.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
            elif ref := e.get("valueFrom", {}).get("secretKeyRef"):
                data = _secret_data(self.objs, ref["name"])
                if data is None:  # an operator-created Secret (cscale-oidc)
                    data = {ref["key"]: self.generated.setdefault(ref["name"], secrets.token_hex(16))}
                env[e["name"]] = data[ref["key"]]
            elif ref := e.get("valueFrom", {}).get("configMapKeyRef"):
                env[e["name"]] = _get(self.objs, "ConfigMap", ref["name"])["data"][ref["key"]]
            elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
                env[e["name"]] = "cscale"
        env.update(overrides)
        return env

    def mounts(self, edit: dict[str, dict[str, str]] | None = None) -> list[str]:
        """-v flags: ConfigMaps/Secrets as read-only files, emptyDir/PVC as owned temp dirs."""
        volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        uid, gid = self.owner()
        flags = []
        for m in self.box.get("volumeMounts", []):
            vol = volumes[m["name"]]
            src = self.workdir / "vol" / m["name"]
            if not src.exists():
                src.mkdir(parents=True)
                files: dict[str, str] | None = None
                if "configMap" in vol:
                    files = dict(_get(self.objs, "ConfigMap", vol["configMap"]["name"])["data"])
                    items = vol["configMap"].get("items")
                elif "secret" in vol:
                    files = _secret_data(self.objs, vol["secret"]["secretName"]) or {}
                    items = vol["secret"].get("items")
                if files is not None:
                    files.update((edit or {}).get(m["name"], {}))
                    if items:
                        files = {i["path"]: files[i["key"]] for i in items}
                    for key, text in files.items():
                        (src / key).write_text(text)
                        (src / key).chmod(0o644)
                    src.chmod(0o755)
                else:  # emptyDir / persistentVolumeClaim
                    os.chown(src, uid, gid)
                    src.chmod(0o775)
            path = src / m["subPath"] if "subPath" in m else src
            ro = m.get("readOnly") or "configMap" in vol or "secret" in vol
            flags += ["-v", f"{path}:{m['mountPath']}{':ro' if ro else ''}"]
        return flags

    def _run_flags(self, env: dict[str, str]) -> list[str]:
        flags = [f"-e={k}={v}" for k, v in env.items()]
        # cluster DNS: every rendered Service name is 127.0.0.1 (host network)
        services = sorted({o["metadata"]["name"] for o in self.objs if o["kind"] == "Service"})
        flags += [f"--add-host={name}:127.0.0.1" for name in services]
        return [*RUNTIME, "--network", "host", *self.security(), *flags]

    def start(self, image: str, argv: list[str], env: dict[str, str],
              extra: list[str] = ()) -> None:
        _sh("podman", "run", "-d", "--name", self.name, *self._run_flags(env), *extra,
            "--entrypoint", "tini", image, "--", *argv)

    def run(self, image: str, argv: list[str], env: dict[str, str],
            extra: list[str] = ()) -> str:
        """Run to completion (removed after); stdout."""
        return _sh("podman", "run", "--rm", "--name", self.name, *self._run_flags(env), *extra,
                   "--entrypoint", "tini", image, "--", *argv, timeout=300).stdout

    def running(self) -> bool:
        out = _sh("podman", "inspect", "-f", "{{.State.Running}}", self.name, check=False)
        return out.stdout.strip() == "true"

    def logs(self) -> str:
        out = _sh("podman", "logs", self.name, check=False)
        return (out.stdout + out.stderr)[-6000:]

    def stop(self) -> None:
        _sh("podman", "rm", "-f", "-t", "5", self.name, check=False, timeout=60)


def _argv(box: dict[str, Any]) -> list[str]:
    return [*box.get("command", []), *box.get("args", [])]


def _replace_opt(argv: list[str], opt: str, value: str) -> list[str]:
    """--opt VALUE or --opt=VALUE -> value (the option must be there)."""
    out, done = list(argv), False
    for i, a in enumerate(out):
        if a == opt:
            out[i + 1], done = value, True
        elif a.startswith(opt + "="):
            out[i], done = f"{opt}={value}", True
    assert done, f"{opt} not in {argv}"
    return out


@pytest.fixture(scope="module")
def hub(images, rendered, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """The hub container (z2jh's jupyterhub_config.py + our settings) behind a real CHP."""
    work = tmp_path_factory.mktemp("hub")
    pod = Pod(rendered, "hub", work)
    secret = _secret_data(rendered, "hub")
    hub_port, proxy_port, api_port = free_port(), free_port(), free_port()
    admin_token = secrets.token_hex(24)
    values = yaml.safe_load(secret["values.yaml"])
    # the one change to the hub's configuration: bind 127.0.0.1:<free> instead of :8081
    # (host network), plus an admin service whose token the test uses
    values["hub"].setdefault("extraConfig", {})["zzz-container-test"] = (
        f'c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"\n'
        f'c.JupyterHub.services.append({{"name": "container-test", "api_token": "{admin_token}"}})\n'
        'c.JupyterHub.load_roles.append({"name": "admin", "services": ["container-test"]})\n'
    )
    edit = {"secret": {"values.yaml": yaml.safe_dump(values)}}
    proxy_token = secret["hub.config.ConfigurableHTTPProxy.auth_token"]
    modules = Path(os.environ.get("CSCALE_NODE_MODULES") or REPO / "node_modules")
    chp = modules / ".bin" / "configurable-http-proxy"
    proxy = subprocess.Popen(
        [str(chp), "--ip", "127.0.0.1", "--port", str(proxy_port), "--api-ip", "127.0.0.1",
         "--api-port", str(api_port), "--default-target", f"http://127.0.0.1:{hub_port}",
         "--log-level", "warn"],
        env={**os.environ, "CONFIGPROXY_AUTH_TOKEN": proxy_token},
    )
    services = {
        "HUB_SERVICE_HOST": "127.0.0.1", "HUB_SERVICE_PORT": str(hub_port),
        "PROXY_API_SERVICE_HOST": "127.0.0.1", "PROXY_API_SERVICE_PORT": str(api_port),
        "PROXY_PUBLIC_SERVICE_HOST": "127.0.0.1", "PROXY_PUBLIC_SERVICE_PORT": str(proxy_port),
    }
    try:
        assert wait_for(lambda: port_open("127.0.0.1", api_port), timeout=30), "CHP did not start"
        pod.start(images["hub"], _argv(pod.box), pod.env(services),
                  extra=pod.mounts(edit) + ["--workdir", "/srv/jupyterhub"])
        url = f"http://127.0.0.1:{hub_port}"
        ok = wait_for(lambda: http_ready(f"{url}/hub/health") or not pod.running(), timeout=180)
        assert ok and pod.running(), f"hub did not answer /hub/health:\n{pod.logs()}"
        yield {"url": url, "proxy_url": f"http://127.0.0.1:{proxy_port}", "token": admin_token,
               "pod": pod, "secret": secret}
    finally:
        pod.stop()
        proxy.terminate()
        proxy.wait(timeout=15)


def test_hub_container_boots_with_z2jh_config(hub):
    """z2jh 4.4.0's jupyterhub_config.py (its curl HTTP client included: pycurl is in the image)
    with the rendered values Secret and our settings: /hub/health, the registered services,
    and the route the hub put into the real proxy."""
    health = httpx.get(f"{hub['url']}/hub/health", timeout=10)
    assert health.status_code == 200
    api = httpx.get(f"{hub['url']}/hub/api/services",
                    headers={"Authorization": f"token {hub['token']}"}, timeout=10)
    assert api.status_code == 200, api.text
    # z2jh's services with the tokens of its Secret, ours after (the one merge)
    assert {"eo-mqs", "runs", "dask-gateway"} <= set(api.json())
    # and the proxy is the hub's: it added its default route through the proxy API
    assert httpx.get(f"{hub['proxy_url']}/hub/health", timeout=10).status_code == 200


def test_singleuser_container_imports_user_stack(images):
    result = _sh("podman", "run", "--rm", *RUNTIME, "--network", "host", "--user", "1000:100",
                 images["singleuser"], "python", "-c", f"import {USER_STACK}; print('ok')",
                 timeout=300)
    assert result.stdout.strip().endswith("ok")


def test_singleuser_container_serves_for_the_hub(images, hub, tmp_path):
    """jupyterhub-singleuser as KubeSpawner starts it (uid 1000, gid 100, HOME a volume),
    with a token the hub issued for the user: it must answer its API under the user's prefix."""
    auth = {"Authorization": f"token {hub['token']}"}
    api = f"{hub['url']}/hub/api"
    user = "alice"
    assert httpx.post(f"{api}/users/{user}", headers=auth, timeout=10).status_code in (201, 409)
    made = httpx.post(f"{api}/users/{user}/tokens", headers=auth, timeout=10,
                      json={"note": "container test", "scopes": ["inherit"]})
    assert made.status_code == 201, made.text
    port = free_port()
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, 1000, 100)
    prefix = f"/user/{user}/"
    env = {
        "JUPYTERHUB_API_TOKEN": made.json()["token"], "JUPYTERHUB_API_URL": api,
        "JUPYTERHUB_USER": user, "JUPYTERHUB_SERVER_NAME": "", "JUPYTERHUB_BASE_URL": "/",
        "JUPYTERHUB_SERVICE_PREFIX": prefix, "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}{prefix}",
        "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{user}", "JUPYTERHUB_HOST": "",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{prefix}oauth_callback",
        "JUPYTERHUB_ACTIVITY_URL": f"{api}/users/{user}/activity",
        "JUPYTERHUB_OAUTH_SCOPES": json.dumps([f"access:servers!server={user}/"]),
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps([f"access:servers!server={user}/"]),
    }
    box = subprocess.run(
        ["podman", "run", "-d", "--name", f"cscale-test-singleuser-{uuid.uuid4().hex[:8]}",
         *RUNTIME, "--network", "host", "--user", "1000:100", "--cap-drop", "ALL",
         "--security-opt", "no-new-privileges", "-v", f"{home}:/home/jovyan",
         *[f"-e={k}={v}" for k, v in env.items()], images["singleuser"]],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()
    try:
        url = f"http://127.0.0.1:{port}{prefix}api"
        assert wait_for(lambda: http_ready(url), timeout=120), _sh(
            "podman", "logs", box, check=False).stderr[-6000:]
        assert "version" in httpx.get(url, timeout=10).json()
        # the server checks tokens with the hub: a hub token with access to alice's server is
        # let in (the admin service's: alice's own would need a real OIDC login first, our
        # authenticator's refresh_user refuses a user without auth state), none is not
        status = httpx.get(f"{url}/status", timeout=10, headers=auth)
        assert status.status_code == 200, status.text
        assert httpx.get(f"{url}/status", timeout=10).status_code == 403
    finally:
        _sh("podman", "rm", "-f", "-t", "5", box, check=False, timeout=60)


def test_gateway_image_loads_the_rendered_config(images, rendered, tmp_path):
    """The real dask-gateway chart's api Deployment (its ConfigMap mount, settings env and
    securityContext) in the gateway image: dask-gateway-server's rendered config loads there
    with our backend. The server itself is not started: its KubeBackend needs a Kubernetes API
    server, which cannot run here."""
    name = next(o["metadata"]["name"] for o in rendered
                if o["kind"] == "Deployment" and o["metadata"]["name"].startswith("api-")
                and "dask-gateway" in o["metadata"]["name"])
    pod = Pod(rendered, name, tmp_path)
    argv = _argv(pod.box)
    assert argv[0] == "dask-gateway-server"
    config = Path(argv[argv.index("--config") + 1])
    code = (
        "from traitlets.config import PyFileConfigLoader as L; "
        f"c = L({config.name!r}, path={str(config.parent)!r}).load_config(); "
        "import dask_gateway_server.app; "
        "from cscale_extensions.gateway.kubernetes import LimitedKubeBackend; "
        "print(issubclass(c.DaskGateway.backend_class, LimitedKubeBackend)); "
        "print(c.JupyterHubAuthenticator.jupyterhub_api_url)"
    )
    # the Service links Kubernetes gives the pod (the hub's Service)
    env = pod.env({"HUB_SERVICE_HOST": "127.0.0.1", "HUB_SERVICE_PORT": "8081"})
    out = pod.run(images["gateway"], ["python", "-c", code], env, extra=pod.mounts())
    assert out.strip().splitlines()[-2:] == [
        "True", "http://127.0.0.1:8081/hub/api"
    ]


def _service_probe(box: dict[str, Any], port: int) -> bool:
    probe = box["readinessProbe"]
    if "httpGet" in probe:
        return http_ready(f"http://127.0.0.1:{port}{probe['httpGet']['path']}")
    return port_open("127.0.0.1", port)


@pytest.mark.parametrize("deployment", ["cscale-eo-mqs", "cscale-runs"])
def test_service_container_answers_probe_locked_down(deployment, images, hub, rendered, tmp_path):
    """EO-MQS and runs in the singleuser image with the chart's command and securityContext
    (read-only root, uid 1000, all capabilities dropped, no privilege escalation), registered
    with the hub container through the tokens of the rendered hub Secret."""
    pod = Pod(rendered, deployment, tmp_path)
    flags = pod.security()
    for flag in ("--read-only", "ALL", "no-new-privileges"):
        assert flag in flags, f"the chart's securityContext lost {flag}"
    assert flags[flags.index("--user") + 1].split(":")[0] == "1000"
    port = free_port()
    argv = _replace_opt(_replace_opt(_argv(pod.box), "--port", str(port)), "--ip", "127.0.0.1")
    if "--proxy-url" in " ".join(argv):
        argv = _replace_opt(argv, "--proxy-url", hub["proxy_url"])
    env = pod.env({
        "JUPYTERHUB_API_URL": f"{hub['url']}/hub/api",
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}",
    })
    try:
        pod.start(images["singleuser"], argv, env, extra=pod.mounts())
        ok = wait_for(lambda: _service_probe(pod.box, port) or not pod.running(), timeout=120)
        assert ok and pod.running(), f"{deployment} did not answer its probe:\n{pod.logs()}"
        if deployment == "cscale-eo-mqs":
            probe = pod.box["readinessProbe"]["httpGet"]["path"]
            assert "conformsTo" in httpx.get(f"http://127.0.0.1:{port}{probe}", timeout=10).json()
        else:
            base = f"http://127.0.0.1:{port}/services/runs"
            assert httpx.get(f"{base}/health", timeout=10).status_code == 200
            assert httpx.get(f"{base}/sites", timeout=10).status_code in (401, 403)
            # a hub token is resolved by the hub container (HubAuth with the rendered service
            # token): the admin service's is known there, and refused here as not a user's
            sites = httpx.get(f"{base}/sites", timeout=10,
                              headers={"Authorization": f"token {hub['token']}"})
            assert sites.status_code == 403, sites.text
            assert "only user tokens" in sites.json()["detail"]
    finally:
        pod.stop()
