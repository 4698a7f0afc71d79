"""KubeSpawner configuration: profiles per federated compute site and size, offered by VO.

The hub configuration calls :func:`configure_kubespawner` when ``spawner.backend`` is
``kubernetes``. Every user server is a pod of the single-user image running as a non-root
account with all capabilities dropped; its home is the user's one volume, mounted by all
their servers (:mod:`cscale_extensions.hub.kubehome`); EO-MQS and runs are named at their
in-cluster Services (:func:`in_cluster_urls`); no OIDC token is put in the pod spec. An init
container of the same image copies the workflow notebooks baked into the image
(``kubernetes.notebooks_image_dir``) into the home before each start, keeping files the
user changed (:mod:`cscale_extensions.singleuser.seed_notebooks`).
Workshop participants get a second one
that fetches the workshop's materials from the hub (:mod:`cscale_extensions.workshop.hub`).

Users choose a profile (site + size). :func:`profile_list` shows a user only the profiles
their VOs (hub groups, named after VOs) may use; a user whose VOs allow none cannot start.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from kubespawner import KubeSpawner
from tornado import web
from traitlets import Bool

from cscale_extensions.hub.environment import (  # as for the local spawners
    server_dashboard_address,
    user_environment,
)
from cscale_extensions.hub.kubehome import (
    HOME_VOLUME,
    OWNER_INIT,
    PER_USER_CLAIM,
    check_storage,
    home_affinity,
    home_mount,
    home_volume,
    owner_init_container,
)
from cscale_extensions.hub.siteform import sites_sentence
from cscale_extensions.kube import (
    check_sites,
    format_literal,
    image_ref,
    pod_security_context,
    site_placement,
)


def allowed_profiles(profiles: list[dict[str, Any]], groups: Iterable[str]) -> list[dict[str, Any]]:
    """The profiles members of ``groups`` may use (an empty ``allowed_vos`` admits everyone)."""
    mine = set(groups)
    return [p for p in profiles if not p.get("allowed_vos") or mine & set(p["allowed_vos"])]


def kubespawner_profile(kube: dict[str, Any], prof: dict[str, Any]) -> dict[str, Any]:
    """One KubeSpawner ``profile_list`` entry for a ``kubernetes.profiles`` item."""
    site = prof.get("site")
    override: dict[str, Any] = {
        "cpu_limit": float(prof["cpu_limit"]),
        "mem_limit": prof["mem_limit"],
        "environment": {"CSCALE_PROFILE": prof["slug"], "CSCALE_COMPUTE_SITE": site or ""},
        "extra_labels": {"cscale.eu/profile": prof["slug"], "cscale.eu/site": site or "any"},
    }
    if prof.get("cpu_guarantee") is not None:
        override["cpu_guarantee"] = float(prof["cpu_guarantee"])
    if prof.get("mem_guarantee") is not None:
        override["mem_guarantee"] = prof["mem_guarantee"]
    placement = site_placement(kube, site)
    if placement["node_selector"]:
        override["node_selector"] = placement["node_selector"]
    if placement["tolerations"]:
        override["tolerations"] = placement["tolerations"]
    if prof.get("image"):
        override["image"] = prof["image"]
    return {
        "slug": prof["slug"],
        "display_name": prof["display_name"],
        "description": prof.get("description", ""),
        "default": bool(prof.get("default", False)),
        "kubespawner_override": override,
    }


def make_profile_list(kube: dict[str, Any], cfg: dict[str, Any] | None = None):
    """A ``KubeSpawner.profile_list`` callable filtering the profiles by the user's VOs; with
    ``cfg`` (the settings) each description also names the compute sites the user may run
    Dask clusters and runs on (:func:`cscale_extensions.hub.siteform.sites_sentence`)."""
    profiles = [
        (p.get("allowed_vos") or [], kubespawner_profile(kube, p)) for p in kube["profiles"]
    ]

    def profile_list(spawner) -> list[dict[str, Any]]:
        groups = {g.name for g in spawner.user.groups}
        mine = [copy.deepcopy(entry) for vos, entry in profiles if not vos or groups & set(vos)]
        if cfg is not None:
            sites = sites_sentence(cfg, sorted(groups))
            for entry in mine:
                entry["description"] = " · ".join(x for x in (entry["description"], sites) if x)
        if profiles and not mine:
            raise web.HTTPError(
                403,
                "None of the server profiles is available to your VO(s) "
                f"({', '.join(sorted(groups)) or 'none'}). Ask the hub operators for access.",
            )
        return mine

    return profile_list


class CScaleKubeSpawner(KubeSpawner):
    """KubeSpawner that tells the server its user's VOs and where its Dask dashboards are
    (under its own URL).

    Unlike the local spawners it puts no ``OIDC_ACCESS_TOKEN`` in the environment: a pod spec
    is readable by whoever may read pods (and kept in etcd and events), and a snapshot expires
    anyway. Code in the server asks the hub for the current token
    (:func:`cscale_extensions.singleuser.token.access_token`, the hub's access-token endpoint).

    With ``home_on_one_node`` (a per-user ReadWriteOnce home, :mod:`.kubehome`) the pod must
    run on the node of the user's other servers, and a named server mounts the user's claim
    even if an earlier version remembered one of its own.
    """

    home_on_one_node = Bool(False, config=True, help="Schedule next to the user's other servers.")

    def load_state(self, state):
        super().load_state(state)
        if self.name and self.home_on_one_node:
            # one home per user: not a claim remembered per named server (claim-<u>--runs)
            self.pvc_name = self._expand_user_properties(self.pvc_name_template)

    async def get_pod_manifest(self):
        if self.home_on_one_node:
            label = self._build_common_labels({})["hub.jupyter.org/username"]
            mine = home_affinity(label)
            others = [t for t in self.pod_affinity_required if t not in mine]
            self.pod_affinity_required = [*others, *mine]
        return await super().get_pod_manifest()

    def get_env(self):
        env = super().get_env()
        env["CSCALE_USER_VOS"] = ",".join(sorted(g.name for g in self.user.groups))
        env.pop("OIDC_ACCESS_TOKEN", None)  # never a literal in the pod spec (see above)
        if "DASK_GATEWAY__ADDRESS" in env:
            # dashboard links on the user's own origin, through their server's proxy
            # (cscale_extensions.singleuser.gateway_dashboards), as on the local stack
            here = self.user.server_url(self.name)  # with user subdomains: their host + path
            env["DASK_GATEWAY__PUBLIC_ADDRESS"] = server_dashboard_address(self.public_url, here)
        return env


def home_init_container(
    cfg: dict[str, Any], name: str, command: list[str], env: dict[str, str] | None = None
) -> dict[str, Any]:
    """An init container of the single-user image, as the user, with only the home mounted."""
    kube = cfg["kubernetes"]
    container: dict[str, Any] = {
        "name": name,
        "image": image_ref(kube),
        "imagePullPolicy": kube["image"]["pull_policy"],
        "command": command,
        "securityContext": {**pod_security_context(kube), "readOnlyRootFilesystem": True},
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        },
        "volumeMounts": [home_mount(kube)],
    }
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return container


def in_home(cfg: dict[str, Any], relative: str) -> str:
    """The path of ``relative`` (a directory in the home) inside the user's pod."""
    return f"{cfg['kubernetes']['storage']['mount_path'].rstrip('/')}/{relative}"


def _notebooks_init_container(cfg: dict[str, Any]) -> dict[str, Any]:
    command = ["python", "-m", "cscale_extensions.singleuser.seed_notebooks"]
    command += [cfg["kubernetes"]["notebooks_image_dir"], in_home(cfg, cfg["notebooks"]["target"])]
    return home_init_container(cfg, "seed-notebooks", command)


#: (environment variable, kubernetes.services key, hub service name, enabling section)
IN_CLUSTER = (
    ("CSCALE_STAC_URL", "eomqs", "eo-mqs", "eomqs"),
    ("CSCALE_RUNS_URL", "runs", "runs", "runs"),
)


def in_cluster_urls(cfg: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    """EO-MQS and runs at their Services' DNS names (``kubernetes.services``), the public URLs
    kept as ``*_PUBLIC_URL`` for browsers; what ``spawner.environment`` sets is left alone."""
    chosen = cfg["spawner"]["environment"]
    services = cfg["kubernetes"]["services"]
    base = cfg["hub"]["base_url"]
    out: dict[str, str] = {}
    for var, key, name, section in IN_CLUSTER:
        if var in chosen or not services.get(key) or not cfg[section].get("enabled", True):
            continue
        out[var.replace("_URL", "_PUBLIC_URL")] = env[var]
        out[var] = f"{services[key].rstrip('/')}{base}services/{name}/"
    return out


def _merged_env(c) -> dict[str, str]:
    env: dict[str, str] = {}
    for section in ("Spawner", "KubeSpawner"):
        if section in c and "environment" in c[section]:
            env.update(c[section].environment)
    return env


def object_name(obj) -> str | None:
    """``name`` of a dict or a kubernetes client object (z2jh adds V1Container objects)."""
    return obj.get("name") if isinstance(obj, dict) else getattr(obj, "name", None)


def _existing(c, name: str, empty):
    """What is already configured on ``c.KubeSpawner.<name>`` (e.g. by z2jh), else ``empty``."""
    if "KubeSpawner" in c and name in c.KubeSpawner:
        return copy.deepcopy(c.KubeSpawner[name])
    return empty


def configure_kubespawner(c, cfg: dict[str, Any]) -> None:
    """Configure ``c`` (a JupyterHub config) to spawn with KubeSpawner from ``cfg``.

    Raises ConfigError when a profile names an unknown compute site. Environment already
    set on ``c.Spawner`` / ``c.KubeSpawner`` is kept and extended.
    """
    kube = cfg["kubernetes"]
    check_sites(kube)
    check_storage(kube)
    spawner = cfg["spawner"]

    c.JupyterHub.spawner_class = CScaleKubeSpawner
    ks = c.KubeSpawner
    if kube["namespace"]:
        ks.namespace = kube["namespace"]
    ks.image = image_ref(kube)
    ks.image_pull_policy = kube["image"]["pull_policy"]
    ks.image_pull_secrets = _existing(c, "image_pull_secrets", []) + [
        {"name": n} for n in kube["image"]["pull_secrets"]
    ]
    ks.cmd = ["jupyterhub-singleuser"]
    ks.default_url = spawner["default_url"]
    ks.start_timeout = int(spawner["start_timeout"])
    ks.http_timeout = int(spawner["http_timeout"])

    # non-root, no capabilities, no privilege escalation
    ks.uid = int(kube["uid"])
    ks.gid = int(kube["fs_gid"])
    ks.fs_gid = int(kube["fs_gid"])
    ks.allow_privilege_escalation = False
    ks.container_security_context = pod_security_context(kube)
    ks.pod_security_context = {
        "runAsNonRoot": True,
        "fsGroup": int(kube["fs_gid"]),
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    ks.automount_service_account_token = False

    # limits outside profiles (the profiles override them)
    if spawner["mem_limit"]:
        ks.mem_limit = spawner["mem_limit"]
    if spawner["cpu_limit"]:
        ks.cpu_limit = float(spawner["cpu_limit"])

    env = _merged_env(c)
    # KubeSpawner expands {username}-style fields in environment values with str.format: our
    # values are literal (e.g. JSON of the compute sites), so their braces are escaped
    env.update({k: format_literal(v) for k, v in user_environment(cfg).items()})
    env.update(in_cluster_urls(cfg, env))
    env["CSCALE_DEPLOYMENT"] = "kubernetes"
    ks.environment = env

    # one home per user for all their servers (cscale_extensions.hub.kubehome) + notebooks
    # seeded by an init container
    storage = kube["storage"]
    per_user = storage["type"] == "per-user"
    ks.storage_pvc_ensure = per_user
    ks.pvc_name_template = PER_USER_CLAIM
    ks.storage_capacity = storage["capacity"]
    ks.storage_access_modes = ["ReadWriteOnce"]
    if storage["storage_class"]:
        ks.storage_class = storage["storage_class"]
    ks.home_on_one_node = per_user
    # what z2jh configured before us (extra volumes, init containers, the
    # hub.jupyter.org/network-access-hub label its NetworkPolicies rely on) is kept
    volume, mount = home_volume(kube), home_mount(kube)
    volumes = [v for v in _existing(c, "volumes", []) if object_name(v) != HOME_VOLUME]
    mounts = [m for m in _existing(c, "volume_mounts", []) if object_name(m) != HOME_VOLUME]
    ks.volumes = [volume, *volumes]
    ks.volume_mounts = [mount, *mounts]
    ours = {"seed-notebooks", OWNER_INIT}
    inits = [i for i in _existing(c, "init_containers", []) if object_name(i) not in ours]
    if storage["home_ownership"] == "chown-init":
        inits.append(owner_init_container(kube))
    if cfg["notebooks"]["enabled"]:
        inits.append(_notebooks_init_container(cfg))
    ks.init_containers = inits

    ks.extra_labels = {
        **_existing(c, "extra_labels", {}),
        "app.kubernetes.io/part-of": "cscale-hub",
    }
    ks.profile_list = make_profile_list(kube, cfg)
