"""Dask dashboards on Kubernetes check the owner (#20), proven without a cluster.

Real parts: the chart rendered with the REAL vendored subcharts and ``helm/post-render.py``
(our Middlewares, the controller's ConfigMap they are put in); dask-gateway-server's
KubeController (its config loaded as it loads it, ``make_ingressroute`` / ``make_pod`` /
``make_secret``) and KubeBackend (our class, its cluster cache); the gateway's forward-auth
endpoint (``DashboardGate.forward_auth`` with dask-gateway's real ``JupyterHubAuthenticator``)
over a real socket; a real ``dask scheduler`` with the guard and a token file. Stand-ins, named in the tests that use them: the hub's API (an aiohttp
server answering ``/user`` and ``/oauth2/token`` like JupyterHub: a hub would make this a stack
test) and the Kubernetes API (the backend's cluster cache is filled directly instead of by
its informer). What only a cluster proves: traefik calling the endpoint and copying the header,
the NetworkPolicies enforced (docs/deploy.md).
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import jsonschema
import kubernetes_validate
import pytest
import yaml
from aiohttp import web
from cscale_testing.kube import (
    INSTANCE,
    cluster_object,
    gateway_config,
    make_backend,
    pods_of,
    production_cfg,
)
from dask_gateway_server.auth import JupyterHubAuthenticator
from dask_gateway_server.backends.kubernetes.controller import KubeController
from dask_gateway_server.models import Cluster, ClusterStatus, User
from traitlets.config import PyFileConfigLoader

from cscale_extensions.dashboard_guard import HEADER, PRELOAD, cluster_token, dashboard_key
from cscale_extensions.gateway.dashboards import FORWARD_AUTH_PATH, SESSION_COOKIE
from cscale_extensions.gateway.kubernetes import KubeDashboardAccess
from cscale_extensions.net import free_port

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "cscale-hub"
POST_RENDERER = REPO / "helm" / "post-render.py"
PREFIX = "/services/dask-gateway"


def _post_render_module():
    spec = importlib.util.spec_from_file_location("post_render", POST_RENDERER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rendered(run, tmp_path_factory) -> list[dict]:
    """The production example rendered with the real subcharts, through the post-renderer."""
    dest = tmp_path_factory.mktemp("chart") / "cscale-hub"
    shutil.copytree(CHART, dest, symlinks=True)
    text = run("template", "cscale", str(dest), "-n", "cscale",
               "-f", str(CHART / "examples" / "production.yaml"))
    return [d for d in yaml.safe_load_all(_post_render_module().post_render(text)) if d]


def _get(objs: list[dict], kind: str, name: str) -> dict:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


def _middleware_schema() -> dict:
    """The Middleware CRD's schema, from the vendored dask-gateway chart's CRDs."""
    archive = next((CHART / "charts").glob("dask-gateway-*.tgz"))
    with tarfile.open(archive) as tar:
        text = tar.extractfile("dask-gateway/crds/traefik.yaml").read().decode()
    crd = next(d for d in yaml.safe_load_all(io.StringIO(text))
               if d and d["spec"]["names"]["kind"] == "Middleware")
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _controller(objs: list[dict], tmp_path: Path) -> KubeController:
    """dask-gateway's controller, configured by the rendered ConfigMap as it loads it."""
    data = _get(objs, "ConfigMap", "controller-cscale-dask-gateway")["data"]
    (tmp_path / "dask_gateway_config.py").write_text(data["dask_gateway_config.py"])
    c = PyFileConfigLoader("dask_gateway_config.py", path=str(tmp_path)).load_config()
    return KubeController(config=c)


def test_rendered_dashboard_middlewares_are_valid_traefik_objects(rendered):
    schema = _middleware_schema()
    auth = _get(rendered, "Middleware", "dashboard-auth-cscale-dask-gateway")
    private = _get(rendered, "Middleware", "dashboard-private-cscale-dask-gateway")
    for mw in (auth, private):
        jsonschema.validate(mw, schema)
        # traefik (--providers.kubernetescrd.labelselector) reads only the instance's objects
        assert mw["metadata"]["labels"]["gateway.dask.org/instance"] == "cscale-dask-gateway"
    fa = auth["spec"]["forwardAuth"]
    assert fa["address"] == f"http://api-cscale-dask-gateway.cscale:8000{FORWARD_AUTH_PATH}"
    assert fa["authResponseHeaders"] == [HEADER]
    assert fa["trustForwardHeader"] is False
    assert fa["authRequestHeaders"] == ["Cookie", "Authorization"]
    api = _get(rendered, "Service", "api-cscale-dask-gateway")  # the address is the api's Service
    assert 8000 in [p["port"] for p in api["spec"]["ports"]]
    assert private["spec"]["headers"]["customRequestHeaders"] == {"Cookie": "", "Authorization": ""}


def test_real_kube_controller_routes_every_dashboard_through_the_owner_check(rendered, tmp_path):
    """dask-gateway's own KubeController, with the rendered controller config, builds a
    cluster's dashboard IngressRoute: our check, then header privacy, then the chart's prefix
    stripping (the check sees the full path, with the cluster's name)."""
    route = _controller(rendered, tmp_path).make_ingressroute("abc123", "cscale")
    rule = route["spec"]["routes"][0]
    assert rule["match"] == f"PathPrefix(`{PREFIX}/clusters/cscale.abc123/`)"
    assert rule["services"][0]["port"] == 8787
    assert [m["name"] for m in rule["middlewares"]] == [
        "dashboard-auth-cscale-dask-gateway",
        "dashboard-private-cscale-dask-gateway",
        "clusters-prefix-cscale-dask-gateway",
    ]
    assert {m["namespace"] for m in rule["middlewares"]} == {"cscale"}
    named = {o["metadata"]["name"] for o in rendered if o["kind"] == "Middleware"}
    assert {m["name"] for m in rule["middlewares"]} <= named


def test_post_renderer_adds_the_check_once():
    module = _post_render_module()
    mws = [{"name": "dashboard-auth-x", "namespace": "ns"}]
    once = module.check_dashboards_first("c.KubeController.proxy_web_middlewares = []\n", mws)
    assert module.check_dashboards_first(once, mws) == once


def test_scheduler_and_worker_pods_preload_the_dashboard_guard():
    """The pods dask-gateway's real controller makes from our backend's DaskCluster object."""
    c = gateway_config(production_cfg())
    obj = cluster_object(c, User("alice", groups=["vo.cscale.eu"]), {})
    scheduler, worker = pods_of(c, obj)
    for pod in (scheduler, worker):
        kubernetes_validate.validate(pod, "1.31", strict=True)
        args = pod["spec"]["containers"][0]["args"]
        assert args[:4] == ["dask", pod["spec"]["containers"][0]["name"].split("-")[1],
                            "--preload", PRELOAD]
    # the guard's first: imported before distributed builds the dashboard's application
    sargs = scheduler["spec"]["containers"][0]["args"]
    assert sargs.index(PRELOAD) < sargs.index("dask_gateway.scheduler_preload")


def test_guard_key_on_kubernetes_is_the_key_the_gateway_derives(tmp_path):
    """Before: the preload took DASK_GATEWAY_API_TOKEN as the token, but on Kubernetes it is the
    path of the token file: every cluster's key was the HMAC of that same path. Now the file is
    read, as the gateway reads the token from the cluster's Secret (controller.make_secret)."""
    c = gateway_config(production_cfg())
    obj = cluster_object(c, User("alice", groups=["vo.cscale.eu"]), {})
    scheduler, _ = pods_of(c, obj)
    env = {e["name"]: e.get("value", "") for e in scheduler["spec"]["containers"][0]["env"]}
    secret = KubeController(config=c, gateway_instance=INSTANCE).make_secret("abc123")
    gateway_token = base64.b64decode(secret["data"]["api-token"]).decode()  # as KubeBackend
    mounted = tmp_path / "api-token"
    mounted.write_bytes(base64.b64decode(secret["data"]["api-token"]))
    assert env["DASK_GATEWAY_API_TOKEN"].startswith("/etc/dask-credentials/")
    pod_env = {**env, "DASK_GATEWAY_API_TOKEN": str(mounted)}
    assert dashboard_key(cluster_token(pod_env)) == dashboard_key(gateway_token)
    assert cluster_token({"DASK_GATEWAY_API_TOKEN": str(tmp_path / "missing")}) == ""


# ---------------------------------------------------------------- the forward-auth endpoint

USERS = {  # token -> the hub's model of its owner
    "alice-token": {"kind": "user", "name": "alice", "admin": False},
    "bob-token": {"kind": "user", "name": "bob", "admin": False},
    "root-token": {"kind": "user", "name": "root", "admin": True},
}


def _stand_in_hub_api() -> web.Application:
    """Stands in for the hub's REST API: /user by token, /oauth2/token (code = user's token)."""

    async def user(request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("token ")
        if token not in USERS:
            return web.json_response({"status": 404}, status=404)
        scopes = ["access:services!service=dask-gateway"]
        return web.json_response({**USERS[token], "scopes": scopes})

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        client = (form.get("client_id"), form.get("client_secret"), form.get("redirect_uri"))
        if form.get("code") not in USERS or client != (
            "service-dask-gateway", "gateway-secret", REDIRECT_URI
        ):
            return web.json_response({"error": "invalid_grant"}, status=400)
        return web.json_response({"access_token": form["code"], "token_type": "Bearer"})

    app = web.Application()
    app.router.add_get("/hub/api/user", user)
    app.router.add_post("/hub/api/oauth2/token", token)
    return app


def _hub_redirect_uri() -> str:
    """The redirect URI JupyterHub registers for the service dask-gateway (its default: the
    service's host, by our subdomain rule, + its prefix + oauth_callback)."""
    from cscale_extensions.hub.origins import service_url

    cfg = production_cfg()
    return service_url(cfg, cfg["platform"]["public_url"], "dask-gateway") + "/oauth_callback"


REDIRECT_URI = _hub_redirect_uri()
GATEWAY_ORIGIN = REDIRECT_URI.split(PREFIX)[0]  # https://dask-gateway--service.<hub host>


def test_gateway_sign_in_urls_follow_the_hubs_rules():
    """gateway_oauth_urls (no jupyterhub in the gateway's image) = hub.origins' host rule, and
    the callback = the redirect URI JupyterHub registers for the service (its host under
    subdomain_host, else host-relative)."""
    from jupyterhub.services.service import Service

    from cscale_extensions.gateway.kubernetes import gateway_oauth_urls
    from cscale_extensions.hub.origins import service_origin, service_url

    for public, subdomains in (("https://hub.example.org/", True),
                               ("https://hub.example.org:8443/base/", True),
                               ("https://hub.example.org/", False)):
        cfg = {"platform": {"public_url": public, "user_subdomains": subdomains}}
        urls = gateway_oauth_urls(cfg)
        assert urls["JUPYTERHUB_PUBLIC_URL"] == service_url(cfg, public, "dask-gateway") + "/"
        assert urls["JUPYTERHUB_PUBLIC_HUB_URL"] == public + "hub/"
        host = service_origin(cfg, public, "dask-gateway") if subdomains else ""
        hub_default = host + Service(name="dask-gateway", base_url=urlsplit(public).path).prefix
        assert urls["JUPYTERHUB_OAUTH_CALLBACK_URL"] == hub_default + "oauth_callback"


def _uri(cluster: str, tail: str = "status") -> str:
    return f"{PREFIX}/clusters/{cluster}/{tail}"


def test_forward_auth_over_a_real_socket_with_stand_in_hub_api_and_k8s_cache(monkeypatch):
    """Owner and admin: 200 + the cluster's key; another user 403; anonymous 401 (a browser
    is sent to sign in); a forged token 403, a forged session cookie is no session; the key
    is never in a refusal. Sessions by the OAuth sign-in against the stand-in hub API."""

    async def scenario() -> None:
        hub = web.AppRunner(_stand_in_hub_api())
        await hub.setup()
        site = web.TCPSite(hub, "127.0.0.1", 0)
        await site.start()
        hub_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        # the gateway pod's environment: the chart gives it only the service's api token; the
        # URLs come from the settings, the hub's API URL from the authenticator's config
        for var in ("JUPYTERHUB_API_URL", "JUPYTERHUB_PUBLIC_URL", "JUPYTERHUB_PUBLIC_HUB_URL",
                    "JUPYTERHUB_OAUTH_CALLBACK_URL", "JUPYTERHUB_CLIENT_ID"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "gateway-secret")

        backend = make_backend(gateway_config(production_cfg()))  # our CScaleKubeBackend
        assert isinstance(backend, KubeDashboardAccess) and backend.dashboard_prefix == PREFIX
        name = "cscale.abc123"
        backend.clusters = {name: Cluster(  # the cache setup() makes, as its informer fills it
            name=name, username="alice", token="cluster-token", options={}, config={},
            status=ClusterStatus.RUNNING, dashboard_address="http://dask-abc123.cscale:8787",
        )}
        key = dashboard_key("cluster-token")

        app = web.Application()
        auth = JupyterHubAuthenticator(jupyterhub_api_url=f"{hub_url}/hub/api",
                                       jupyterhub_api_token="gateway-secret")
        await auth.setup(app)
        with warnings.catch_warnings():  # the key dask-gateway's own application uses
            warnings.simplefilter("ignore", web.NotAppKeyWarning)
            app["authenticator"] = auth
        backend.install_dashboard_gate(app)  # what its setup() does after KubeBackend's
        gw = web.AppRunner(app)
        await gw.setup()
        gsite = web.TCPSite(gw, "127.0.0.1", 0)
        await gsite.start()
        endpoint = (f"http://127.0.0.1:{gsite._server.sockets[0].getsockname()[1]}"
                    f"{FORWARD_AUTH_PATH}")

        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:

            async def ask(uri=None, method="GET", **headers):
                headers = {"X-Forwarded-Uri": uri or _uri(name), "X-Forwarded-Method": method, **headers}
                async with http.get(endpoint, headers=headers, allow_redirects=False) as r:
                    await r.read()
                    return r

            def token(t):
                return {"Authorization": f"jupyterhub {t}"}

            for who in ("alice-token", "root-token"):
                r = await ask(**token(who))
                assert r.status == 200 and r.headers[HEADER] == key, who
            refusals = [
                (await ask(**token("bob-token")), 403),
                (await ask(**token("forged")), 403),
                (await ask(method="POST"), 401),
                (await ask(Connection="Upgrade", Upgrade="websocket"), 401),
                (await ask(Cookie=f"{SESSION_COOKIE}=forged", Connection="Upgrade"), 401),
                (await ask(uri=_uri("cscale.nosuch"), **token("root-token")), 403),
                (await ask(uri="/services/dask-gateway/api/v1/clusters/", **token("alice-token")),
                 403),
                # the public API route (prefix stripped by traefik): never answered
                (await ask(**token("alice-token"), **{"X-Forwarded-Prefix": PREFIX}), 404),
            ]
            for r, status in refusals:
                assert r.status == status
                assert HEADER not in r.headers

            # a browser without a session: to the hub's sign-in, back to the dashboard
            r = await ask(Cookie=f"{SESSION_COOKIE}=forged")
            assert r.status == 302 and HEADER not in r.headers
            location = urlsplit(r.headers["Location"])
            assert location.netloc == urlsplit(production_cfg()["platform"]["public_url"]).netloc
            assert location.path == "/hub/api/oauth2/authorize"
            state = parse_qs(location.query)["state"][0]
            callback = endpoint.replace(FORWARD_AUTH_PATH, "/oauth_callback")
            for who, status in (("bob-token", 403), ("root-token", 200), ("alice-token", 200)):
                r = await ask(Cookie=f"{SESSION_COOKIE}=forged", Connection="close")
                state = parse_qs(urlsplit(r.headers["Location"]).query)["state"][0]
                async with http.get(callback, params={"code": who, "state": state},
                                    headers={"Cookie": f"cscale-dashboard-state={state}"},
                                    allow_redirects=False) as cb:
                    assert cb.status == 302
                    assert cb.headers["Location"] == GATEWAY_ORIGIN + _uri(name)
                    session = cb.cookies[SESSION_COOKIE].value
                r = await ask(Cookie=f"{SESSION_COOKIE}={session}")
                assert r.status == status, who
                assert (r.headers.get(HEADER) == key) if status == 200 else HEADER not in r.headers

        await gw.cleanup()
        await auth.cleanup()
        await hub.cleanup()

    asyncio.run(scenario())


def test_real_scheduler_with_the_kubernetes_token_file_answers_only_the_key(tmp_path):
    """A real ``dask scheduler`` with the pod's preload and, as on Kubernetes,
    DASK_GATEWAY_API_TOKEN naming the mounted token file: its dashboard port refuses requests
    without the key the gateway derives from the Secret (403) and serves those with it."""
    token = "0123456789abcdef0123456789abcdef"
    (tmp_path / "api-token").write_text(token)
    port = free_port()
    env = {**os.environ, "DASK_GATEWAY_API_TOKEN": str(tmp_path / "api-token")}
    dask = str(Path(sys.executable).with_name("dask"))
    proc = subprocess.Popen(
        [dask, "scheduler", "--preload", PRELOAD, "--host", "127.0.0.1", "--port", "0",
         "--dashboard-address", f"127.0.0.1:{port}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
    )
    try:
        url = f"http://127.0.0.1:{port}/health"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    pytest.fail("served without the key")
            except urllib.error.HTTPError as exc:
                assert exc.code == 403
                break
            except OSError:
                assert proc.poll() is None, "the scheduler exited"
                assert time.monotonic() < deadline, "no dashboard within 60 s"
                time.sleep(0.3)
        for wrong in ("", dashboard_key("/etc/dask-credentials/api-token"), dashboard_key("x")):
            request = urllib.request.Request(url, headers={HEADER: wrong})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=5)
            assert refused.value.code == 403
        request = urllib.request.Request(url, headers={HEADER: dashboard_key(token)})
        with urllib.request.urlopen(request, timeout=5) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
