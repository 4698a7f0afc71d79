"""The user's home on Kubernetes: one volume per user, mounted by all of their servers.

A user's named servers (the ``runs`` server executing ``--in-home`` notebooks, writing
``~/runs/``) must see the same files as their default server, so the home is per *user*, never
per server (KubeSpawner's default claim name ``claim-{user_server}`` would give each named
server its own, empty claim):

- ``kubernetes.storage.type: per-user``: a ReadWriteOnce claim ``claim-{username}`` for all the
  user's servers. Such a volume attaches to one node at a time, so a server is scheduled next
  to the user's other running servers (required pod affinity on their username label; the
  first one goes anywhere). Claims remembered per named server by earlier versions
  (``claim-<user>--runs``) are not reused: the named server takes the user's claim.
- ``type: shared``: one existing ReadWriteMany claim (NFS, CephFS) for everyone; each user's
  home is its sub-directory ``<username>`` (a ``subPath``; the kubelet confines the mount to it).

Ownership: by default the pod's fsGroup makes the home writable by the user. Volumes without
fsGroup support (most NFS drivers, subPath directories the kubelet creates as root) take
``home_ownership: chown-init``: a root init container with only CAP_CHOWN gives the home's
top directory to the user (``chown -h``: no recursion, a symlink is not followed) before the
notebooks are seeded. That container is why such pods need Pod Security ``baseline``.
"""

from __future__ import annotations

from typing import Any

from cscale_extensions.config import ConfigError
from cscale_extensions.kube import format_literal, image_ref

HOME_VOLUME = "home"
PER_USER_CLAIM = "claim-{username}"  # no {servername}: every server of the user mounts it
OWNER_INIT = "home-owner"


def check_storage(kube: dict[str, Any]) -> None:
    """Raise ConfigError when ``type: shared`` names no claim."""
    storage = kube["storage"]
    if storage["type"] == "shared" and not storage.get("shared_claim"):
        raise ConfigError(
            "kubernetes.storage.shared_claim: required with kubernetes.storage.type: shared "
            "(the name of an existing ReadWriteMany PersistentVolumeClaim holding the homes)"
        )


def home_volume(kube: dict[str, Any]) -> dict[str, Any]:
    """The pod volume of the home (KubeSpawner expands ``{pvc_name}``)."""
    storage = kube["storage"]
    claim = format_literal(storage["shared_claim"]) if storage["type"] == "shared" else "{pvc_name}"
    return {"name": HOME_VOLUME, "persistentVolumeClaim": {"claimName": claim}}


def home_mount(kube: dict[str, Any]) -> dict[str, Any]:
    """The home's volumeMount (with the user's sub-directory on a shared volume)."""
    mount = {"name": HOME_VOLUME, "mountPath": kube["storage"]["mount_path"]}
    if kube["storage"]["type"] == "shared":
        mount["subPath"] = "{username}"  # KubeSpawner's safe slug of the hub username
    return mount


def home_affinity(username_label: str) -> list[dict[str, Any]]:
    """Required pod affinity: on the node of the user's other servers (ReadWriteOnce home)."""
    return [
        {
            "labelSelector": {
                "matchLabels": {
                    "hub.jupyter.org/username": username_label,
                    "app.kubernetes.io/component": "singleuser-server",
                }
            },
            "topologyKey": "kubernetes.io/hostname",
        }
    ]


def owner_init_container(kube: dict[str, Any]) -> dict[str, Any]:
    """The root init container chowning only the home's top directory to the user."""
    home = kube["storage"]["mount_path"]
    owner = f"{int(kube['uid'])}:{int(kube['fs_gid'])}"
    return {
        "name": OWNER_INIT,
        "image": image_ref(kube),
        "imagePullPolicy": kube["image"]["pull_policy"],
        # -h: the directory itself, never a symlink's target; no -R: nothing below it
        "command": ["chown", "-h", owner, home],
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "100m", "memory": "64Mi"},
        },
        "volumeMounts": [home_mount(kube)],
    }

