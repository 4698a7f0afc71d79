"""KubeSpawner with our configuration builds valid pods, without a Kubernetes API server.

Real parts: jupyterhub's User / ORM (in-memory sqlite), KubeSpawner 7 and its
``get_pod_manifest()`` / ``get_pvc_manifest()``. The only stand-in is the Kubernetes API: a
kubeconfig naming an unreachable server (nothing here contacts it; building manifests does not
need the API). Objects are validated with kubernetes-validate (1.31, strict).
"""

from __future__ import annotations

import asyncio
import json
import os

import kubernetes_validate
import pytest
from cscale_testing import kube_spawner
from cscale_testing.kube import production_cfg
from kubernetes_asyncio.client import ApiClient
from tornado import web
from traitlets.config import Config

from cscale_extensions import config as settings
from cscale_extensions.hub.kubespawner import (
    CScaleKubeSpawner,
    allowed_profiles,
    configure_kubespawner,
)

pytestmark = pytest.mark.usefixtures("offline_kubeconfig")


async def pod_for(
    c: Config,
    groups: list[str],
    profile: str | None = None,
    username="alice",
    access_token: str = "",
):
    spawner = kube_spawner(c, username, groups)
    if access_token:  # what the hub's auth_state_hook stores
        spawner.oidc_access_token = access_token
    try:
        spawner.user_options = {"profile": profile} if profile else {}
        await spawner.load_user_options()
        spawner.api_token = "token-for-test"
        pod = ApiClient().sanitize_for_serialization(await spawner.get_pod_manifest())
        pvc = ApiClient().sanitize_for_serialization(spawner.get_pvc_manifest())
        return spawner, pod, pvc
    finally:
        await spawner.api.api_client.close()


def configured(cfg: dict) -> Config:
    c = Config()
    configure_kubespawner(c, cfg)
    return c


def env_of(pod: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}


def test_profiles_are_filtered_by_the_users_vos():
    cfg = production_cfg()
    c = configured(cfg)

    async def slugs(groups):
        spawner = kube_spawner(c, "bob", groups)
        try:
            return [p["slug"] for p in spawner.profile_list(spawner)]
        finally:
            await spawner.api.api_client.close()

    assert asyncio.run(slugs(["vo.cscale.eu"])) == ["cesnet-small", "cesnet-large", "incd-medium"]
    assert asyncio.run(slugs(["vo.eodc.eu"])) == ["cesnet-small", "eodc-medium"]
    both = asyncio.run(slugs(["vo.eodc.eu", "vo.cscale.eu"]))
    assert both == ["cesnet-small", "cesnet-large", "eodc-medium", "incd-medium"]


def test_pod_of_an_allowed_profile_carries_site_size_and_security():
    cfg = production_cfg()
    spawner, pod, pvc = asyncio.run(pod_for(configured(cfg), ["vo.eodc.eu"], "eodc-medium"))
    assert isinstance(spawner, CScaleKubeSpawner)
    kubernetes_validate.validate(pod, "1.31", strict=True)
    kubernetes_validate.validate(pvc, "1.31", strict=True)
    spec = pod["spec"]
    (main,) = spec["containers"]
    assert main["image"] == "ghcr.io/c-scale/cscale-hub-singleuser:0.1.0"
    assert main["args"] == ["jupyterhub-singleuser"]
    assert main["resources"]["limits"] == {"cpu": 4.0, "memory": 16 * 2**30}
    assert spec["nodeSelector"] == {"cscale.eu/site": "eodc"}
    assert spec["tolerations"][0]["value"] == "eodc"
    sc = main["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 1000
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert spec["securityContext"]["fsGroup"] == 100
    assert spec["automountServiceAccountToken"] is False
    env = env_of(pod)
    assert env["CSCALE_PROFILE"] == "eodc-medium"
    assert env["CSCALE_COMPUTE_SITE"] == "eodc"
    assert env["CSCALE_USER_VOS"] == "vo.eodc.eu"
    # services at their in-cluster Service names (no hairpin through the public ingress); the
    # public URLs stay for links a browser opens
    assert env["CSCALE_STAC_URL"] == "http://cscale-eo-mqs:8080/services/eo-mqs/"
    assert env["CSCALE_RUNS_URL"] == "http://cscale-runs:8080/services/runs/"
    assert env["CSCALE_STAC_PUBLIC_URL"] == "https://hub.c-scale.eu/services/eo-mqs/"
    assert env["CSCALE_RUNS_PUBLIC_URL"] == "https://hub.c-scale.eu/services/runs/"
    # Dask dashboards under the user's own server (singleuser.gateway_dashboards), not the
    # gateway's host, as on the local stack
    assert env["DASK_GATEWAY__PUBLIC_ADDRESS"].endswith("/user/alice/dask-gateway")
    assert pod["metadata"]["labels"]["cscale.eu/site"] == "eodc"
    # home: a claim of the configured size and class, mounted at the home
    assert pvc["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert pvc["spec"]["storageClassName"] == "csi-cinder-sc-delete"
    claim = next(v for v in spec["volumes"] if v["name"] == "home")
    assert claim["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    # notebooks: the init container copies the image's notebooks into the home
    (init,) = spec["initContainers"]
    assert init["command"][-2:] == [
        "/opt/cscale/workflow_notebooks",
        "/home/jovyan/workflow_notebooks",
    ]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    assert init["volumeMounts"] == [{"name": "home", "mountPath": "/home/jovyan"}]


def test_profile_of_another_vo_is_refused():
    c = configured(production_cfg())
    with pytest.raises(ValueError, match="No such profile: eodc-medium"):
        asyncio.run(pod_for(c, ["vo.cscale.eu"], "eodc-medium"))


def test_user_without_an_allowed_profile_cannot_start():
    cfg = production_cfg(
        kubernetes={
            "profiles": [
                {
                    "slug": "only-eodc",
                    "display_name": "EODC",
                    "cpu_limit": 1,
                    "mem_limit": "1G",
                    "allowed_vos": ["vo.eodc.eu"],
                }
            ]
        }
    )
    with pytest.raises(web.HTTPError) as err:
        asyncio.run(pod_for(configured(cfg), ["vo.cscale.eu"]))
    assert err.value.status_code == 403
    assert "vo.cscale.eu" in err.value.log_message


def test_default_profile_is_used_when_none_is_chosen():
    _, pod, _ = asyncio.run(pod_for(configured(production_cfg()), ["vo.cscale.eu"]))
    assert env_of(pod)["CSCALE_PROFILE"] == "cesnet-small"
    assert "OIDC_ACCESS_TOKEN" not in env_of(pod)


def test_users_access_token_is_not_in_the_pod_spec():
    """Before: the hub's snapshot was the literal env value OIDC_ACCESS_TOKEN, readable by
    anyone who may read pods. The server asks the hub for it (singleuser.token)."""
    c = configured(production_cfg(spawner={"environment": {"OIDC_ACCESS_TOKEN": "at-cfg"}}))
    spawner, pod, _ = asyncio.run(pod_for(c, ["vo.cscale.eu"], access_token="at-123"))
    assert spawner.oidc_access_token == "at-123"  # the hub had it
    text = json.dumps(pod)
    assert "at-123" not in text and "at-cfg" not in text
    assert "OIDC_ACCESS_TOKEN" not in env_of(pod)
    # what the server uses instead: its hub API and user, for the access-token endpoint
    env = env_of(pod)
    assert env["JUPYTERHUB_API_URL"].endswith("/hub/api") and env["JUPYTERHUB_USER"] == "alice"


def test_unknown_site_is_a_configuration_error():
    cfg = production_cfg(
        kubernetes={
            "profiles": [
                {
                    "slug": "x",
                    "display_name": "X",
                    "cpu_limit": 1,
                    "mem_limit": "1G",
                    "site": "mars",
                }
            ]
        }
    )
    with pytest.raises(
        settings.ConfigError, match=r"kubernetes.profiles\[0\].site: unknown site 'mars'"
    ):
        configured(cfg)


def test_allowed_profiles_empty_list_admits_every_vo():
    profiles = [{"slug": "a", "allowed_vos": []}, {"slug": "b", "allowed_vos": ["x"]}]
    assert [p["slug"] for p in allowed_profiles(profiles, ["y"])] == ["a"]
    assert [p["slug"] for p in allowed_profiles(profiles, ["x"])] == ["a", "b"]


def test_environment_set_before_is_kept():
    c = Config()
    c.Spawner.environment = {"FROM_LEAD": "1"}
    configure_kubespawner(c, production_cfg(spawner={"environment": {"EXTRA": "2"}}))
    env = c.KubeSpawner.environment
    assert (
        env["FROM_LEAD"] == "1" and env["EXTRA"] == "2" and env["CSCALE_DEPLOYMENT"] == "kubernetes"
    )


def test_notebooks_can_be_disabled():
    c = configured(production_cfg(notebooks={"enabled": False}))
    assert c.KubeSpawner.init_containers == []


def test_offline_kubeconfig_is_what_kubespawner_loaded(offline_kubeconfig):
    """Guard: the tests above talk to no real cluster (the configured server is unreachable)."""
    from kubernetes_asyncio.client import Configuration

    assert Configuration.get_default_copy().host == "https://127.0.0.1:9"
    assert "KUBERNETES_SERVICE_HOST" not in os.environ


def test_spawn_form_lists_only_the_users_profiles():
    """The form JupyterHub shows at /hub/spawn (KubeSpawner renders it from our callable)."""
    from jupyterhub.utils import maybe_future

    c = configured(production_cfg())

    async def form(groups):
        spawner = kube_spawner(c, "carol", groups)
        try:
            options_form = spawner.options_form
            return await maybe_future(
                options_form(spawner) if callable(options_form) else options_form
            )
        finally:
            await spawner.api.api_client.close()

    html = asyncio.run(form(["vo.eodc.eu"]))
    assert "EODC, medium (4 CPU, 16 GiB)" in html
    assert "CESNET, small (2 CPU, 8 GiB)" in html
    assert "CESNET, large" not in html and "INCD" not in html


def test_what_z2jh_configured_is_kept():
    """z2jh sets these before our configuration runs; dropping the label would let its hub
    NetworkPolicy cut user servers off the hub API."""
    c = Config()
    c.KubeSpawner.extra_labels = {"hub.jupyter.org/network-access-hub": "true"}
    c.KubeSpawner.volumes = [{"name": "extra", "emptyDir": {}}]
    c.KubeSpawner.volume_mounts = [{"name": "extra", "mountPath": "/srv/extra"}]
    from kubernetes_asyncio.client import V1Container

    # z2jh appends a V1Container object (cloudMetadata.blockWithIptables), not a dict
    c.KubeSpawner.init_containers = [V1Container(name="block-cloud-metadata", image="net-tools:1")]
    c.KubeSpawner.image_pull_secrets = ["chart-pull-secret"]
    configure_kubespawner(c, production_cfg())
    _, pod, _ = asyncio.run(pod_for(c, ["vo.cscale.eu"]))
    kubernetes_validate.validate(pod, "1.31", strict=True)
    assert pod["metadata"]["labels"]["hub.jupyter.org/network-access-hub"] == "true"
    assert pod["metadata"]["labels"]["app.kubernetes.io/part-of"] == "cscale-hub"
    assert {v["name"] for v in pod["spec"]["volumes"]} >= {"home", "extra"}
    assert [i["name"] for i in pod["spec"]["initContainers"]] == [
        "block-cloud-metadata",
        "seed-notebooks",
    ]
    assert {"name": "chart-pull-secret"} in pod["spec"]["imagePullSecrets"]


def test_configuring_twice_does_not_duplicate():
    c = Config()
    configure_kubespawner(c, production_cfg())
    configure_kubespawner(c, production_cfg())
    assert [v["name"] for v in c.KubeSpawner.volumes] == ["home"]
    assert [i["name"] for i in c.KubeSpawner.init_containers] == ["seed-notebooks"]


def test_in_cluster_service_urls_can_be_turned_off_or_overridden():
    cfg = production_cfg(
        kubernetes={"services": {"eomqs": None}},
        spawner={"environment": {"CSCALE_RUNS_URL": "http://runs.example/services/runs/"}},
    )
    _, pod, _ = asyncio.run(pod_for(configured(cfg), ["vo.cscale.eu"]))
    env = env_of(pod)
    assert env["CSCALE_STAC_URL"] == "https://hub.c-scale.eu/services/eo-mqs/"
    assert env["CSCALE_RUNS_URL"] == "http://runs.example/services/runs/"
    assert "CSCALE_STAC_PUBLIC_URL" not in env and "CSCALE_RUNS_PUBLIC_URL" not in env
