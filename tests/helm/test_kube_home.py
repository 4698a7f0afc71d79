"""One home per user on Kubernetes, for all their servers (cscale_extensions.hub.kubehome).

Real parts: jupyterhub's User / ORM (in-memory sqlite) with a default and a named ``runs``
server, KubeSpawner 7's ``get_pod_manifest()`` / ``get_pvc_manifest()`` / ``load_state()``.
Stand-in: the Kubernetes API (an unreachable kubeconfig; building manifests needs no API).
Pods are validated with kubernetes-validate (1.31, strict).
"""

from __future__ import annotations

import asyncio

import kubernetes_validate
import pytest
from cscale_testing import kube_spawner
from jupyterhub import orm
from kubernetes_asyncio.client import ApiClient

from cscale_extensions import config as settings

from .test_kubespawner import configured, production_cfg

pytestmark = pytest.mark.usefixtures("offline_kubeconfig")


async def pods(c, servers=("", "runs"), state=None):
    """{server name: (pod, pvc)} for alice's default and named servers."""
    default = kube_spawner(c, "alice", ["vo.cscale.eu"])
    out = {}
    try:
        for name in servers:
            if name:  # a named server, as the hub records it before spawning
                user = default.user
                user.db.add(orm.Spawner(user=user.orm_user, name=name))
                user.db.commit()
            spawner = default if not name else default.user.spawners[name]
            if state:
                spawner.load_state(state)
            await spawner.load_user_options()
            spawner.api_token = "token-for-test"
            pod = ApiClient().sanitize_for_serialization(await spawner.get_pod_manifest())
            pvc = ApiClient().sanitize_for_serialization(spawner.get_pvc_manifest())
            out[name] = (spawner, pod, pvc)
            if name:
                await spawner.api.api_client.close()
    finally:
        await default.api.api_client.close()
    return out


def home_of(pod):
    vol = next(v for v in pod["spec"]["volumes"] if v["name"] == "home")
    mount = next(m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == "home")
    return vol, mount


def test_named_server_mounts_the_users_claim():
    """Before: KubeSpawner's claim-{user_server} gave the runs server claim-alice--runs."""
    out = asyncio.run(pods(configured(production_cfg())))
    (s0, pod0, pvc0), (s1, pod1, pvc1) = out[""], out["runs"]
    assert pvc0["metadata"]["name"] == pvc1["metadata"]["name"] == "claim-alice"
    for pod in (pod0, pod1):
        kubernetes_validate.validate(pod, "1.31", strict=True)
        vol, mount = home_of(pod)
        assert vol["persistentVolumeClaim"]["claimName"] == "claim-alice"
        assert "subPath" not in mount
        # ReadWriteOnce: on the node of the user's other servers
        (term,) = pod["spec"]["affinity"]["podAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]
        assert term["labelSelector"]["matchLabels"]["hub.jupyter.org/username"] == "alice"
        assert term["topologyKey"] == "kubernetes.io/hostname"
    assert s0.home_on_one_node and s1.home_on_one_node


def test_claim_remembered_for_a_named_server_is_replaced_by_the_users():
    state = {"pvc_name": "claim-alice--runs", "kubespawner_version": "7.0.0"}
    out = asyncio.run(pods(configured(production_cfg()), servers=("runs",), state=state))
    spawner, pod, _ = out["runs"]
    assert spawner.pvc_name == "claim-alice"
    assert home_of(pod)[0]["persistentVolumeClaim"]["claimName"] == "claim-alice"


def test_shared_volume_gives_each_user_a_sub_directory():
    cfg = production_cfg(kubernetes={"storage": {"type": "shared", "shared_claim": "homes-nfs"}})
    c = configured(cfg)
    assert c.KubeSpawner.storage_pvc_ensure is False
    out = asyncio.run(pods(c))
    for _, pod, _ in out.values():
        kubernetes_validate.validate(pod, "1.31", strict=True)
        vol, mount = home_of(pod)
        assert vol["persistentVolumeClaim"]["claimName"] == "homes-nfs"
        assert mount["subPath"] == "alice" and mount["mountPath"] == "/home/jovyan"
        # the seeding init container writes into the same sub-directory
        (init,) = pod["spec"]["initContainers"]
        assert init["volumeMounts"] == [mount]
        assert "affinity" not in pod["spec"] or "podAffinity" not in pod["spec"]["affinity"]


def test_shared_volume_needs_a_claim():
    with pytest.raises(settings.ConfigError, match="shared_claim: required"):
        configured(production_cfg(kubernetes={"storage": {"type": "shared"}}))


def test_chown_init_owns_only_the_homes_top_directory_before_seeding():
    cfg = production_cfg(
        kubernetes={
            "storage": {
                "type": "shared",
                "shared_claim": "homes-nfs",
                "home_ownership": "chown-init",
            }
        }
    )
    _, pod, _ = asyncio.run(pods(configured(cfg), servers=("",)))[""]
    kubernetes_validate.validate(pod, "1.31", strict=True)
    owner, seed = pod["spec"]["initContainers"]
    assert (owner["name"], seed["name"]) == ("home-owner", "seed-notebooks")
    # no -R, -h: the directory itself, not a symlink's target
    assert owner["command"] == ["chown", "-h", "1000:100", "/home/jovyan"]
    sc = owner["securityContext"]
    assert sc["runAsUser"] == 0 and sc["runAsNonRoot"] is False
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert owner["volumeMounts"] == [
        {"name": "home", "mountPath": "/home/jovyan", "subPath": "alice"}
    ]
    # the seeding and the server stay the user
    assert seed["securityContext"]["runAsUser"] == 1000
    assert pod["spec"]["containers"][0]["securityContext"]["runAsUser"] == 1000


def test_default_ownership_is_fsgroup_without_a_root_container():
    _, pod, _ = asyncio.run(pods(configured(production_cfg()), servers=("",)))[""]
    assert [i["name"] for i in pod["spec"]["initContainers"]] == ["seed-notebooks"]
    assert pod["spec"]["securityContext"]["fsGroup"] == 100
