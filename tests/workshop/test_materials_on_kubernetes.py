"""Workshop materials reach a participant's pod on Kubernetes: through the hub, not its disk.

Real parts: the hub of a local stack serving ``/hub/cscale/workshops/<name>/materials``, hub API
tokens, KubeSpawner 7 building the pod with our configuration and the workshop pre-spawn hook,
and the pod's init container command run as a process against that hub. The stand-in is the
Kubernetes API (an unreachable server in the kubeconfig; building pods does not contact it) and
the pod itself: its home volume is a temporary directory.
"""

from __future__ import annotations

import asyncio
import io
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import kubernetes_validate
import pytest
import requests
from cscale_testing import kube_spawner
from kubernetes_asyncio.client import ApiClient
from traitlets.config import Config

from cscale_extensions import config as settings
from cscale_extensions.hub.kubespawner import configure_kubespawner
from cscale_extensions.workshop import materials
from cscale_extensions.workshop.hub import INIT_CONTAINER, configure_workshops
from cscale_extensions.workshop.hubapi import HubAPI
from cscale_extensions.workshop.model import WorkshopError

pytestmark = pytest.mark.usefixtures("offline_kubeconfig")


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("course")
    (src / "data").mkdir()
    (src / "data" / "points.csv").write_text("x,y\n1,2\n")
    (src / "01-intro.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4}')
    (src / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(src / "run.sh", 0o755)
    return src


def workshop_cli(ws_stack, admin: str, *argv: str) -> int:
    from cscale_extensions.cli import main

    return main(["workshop", *argv, "--data-dir", str(ws_stack.state_dir), "--token", admin])


@pytest.fixture(scope="module")
def admin(ws_stack) -> str:
    return ws_stack.api_token("demo-admin", note="kube materials tests")


@pytest.fixture(scope="module")
def podlab(ws_stack, admin, course) -> HubAPI:
    """A workshop of two participants with materials, created by the real CLI."""
    argv = ("create", "podlab", "--users", "2", "--materials", str(course), "--end", "2099-01-01")
    assert workshop_cli(ws_stack, admin, *argv) == 0
    return HubAPI(ws_stack.url, admin)


def kube_config(ws_stack, home: Path) -> Config:
    """The JupyterHub config the chart's hub would build from the platform settings on
    Kubernetes, sharing the local stack's workshops."""
    cfg = settings.load(
        None,
        {
            "platform": {"deployment": "kubernetes", "data_dir": str(ws_stack.state_dir)},
            "spawner": {"backend": "kubernetes"},
            "dask_gateway": {"backend": "kubernetes"},
            "federation": {"embedded_sites": False},
            "kubernetes": {"storage": {"mount_path": str(home)}},
        },
    )
    c = Config()
    configure_kubespawner(c, cfg)
    configure_workshops(c, cfg)
    return c


async def spawn_pod(c: Config, spawner, token: str) -> dict:
    """What the hub does up to the pod: token, pre-spawn hook, manifest (no API call)."""
    spawner.api_token = token
    await spawner.run_pre_spawn_hook()
    await spawner.load_user_options()
    return ApiClient().sanitize_for_serialization(await spawner.get_pod_manifest())


def run_init_container(init: dict) -> str:
    """Run the init container's command as a process, with its environment (the image's
    ``python`` is this interpreter: the same package)."""
    command = [sys.executable if init["command"][0] == "python" else init["command"][0]]
    env = {**os.environ, **{e["name"]: e["value"] for e in init.get("env", [])}}
    r = subprocess.run(
        command + init["command"][1:], env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr  # never fails the pod
    return r.stdout


def hub_url(ws_stack) -> str:
    return ws_stack.url.rstrip("/")


def test_participant_pod_gets_its_copy_once_and_keeps_their_edits(ws_stack, podlab, course,
                                                                 tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    c = kube_config(ws_stack, home)
    token = podlab.token_for("podlab-01", "server of the pod")

    async def spawn() -> dict:
        spawner = kube_spawner(c, "podlab-01", [], hub_url=hub_url(ws_stack))
        try:
            return await spawn_pod(c, spawner, token)
        finally:
            await spawner.api.api_client.close()

    pod = asyncio.run(spawn())
    kubernetes_validate.validate(pod, "1.31", strict=True)
    inits = pod["spec"]["initContainers"]
    assert [i["name"] for i in inits] == ["seed-notebooks", INIT_CONTAINER]
    init = inits[1]
    assert init["command"][-1] == f"{home}/podlab"
    assert init["command"][-2] == f"{hub_url(ws_stack)}/hub/cscale/workshops/podlab/materials"
    assert init["securityContext"]["runAsNonRoot"] is True
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    assert init["volumeMounts"] == [{"name": "home", "mountPath": str(home)}]
    main_env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert main_env["CSCALE_WORKSHOP"] == "podlab"

    out = run_init_container(init)
    assert "3 files copied" in out, out
    copy = home / "podlab"
    for rel in ("01-intro.ipynb", "data/points.csv", "run.sh"):
        assert (copy / rel).read_bytes() == (course / rel).read_bytes()
    assert stat.S_IMODE((copy / "data" / "points.csv").stat().st_mode) == 0o644
    assert stat.S_IMODE((copy / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((copy / "data").stat().st_mode) == 0o755
    assert not [p for p in home.iterdir() if p.name != "podlab"]  # no staging left behind

    # the participant edits; the next start of their pod keeps the edit
    (copy / "01-intro.ipynb").write_text("mine")
    out = run_init_container(init)
    assert "exists: kept as it is" in out
    assert (copy / "01-intro.ipynb").read_text() == "mine"


def test_only_participants_and_admins_get_the_materials(ws_stack, admin, podlab, tmp_path):
    url = f"{hub_url(ws_stack)}/hub/cscale/workshops/podlab/materials"
    # a signed-in member of the VO, not in the workshop (a token made through their session)
    outsider = ws_stack.api_token("demo-member", note="not in the workshop")
    checks = {
        outsider: (403, "demo-member is not a participant of workshop podlab"),
        "forged-token": (403, ""),
        "": (403, ""),
    }
    for token, (code, message) in checks.items():
        headers = {"Authorization": f"token {token}"} if token else {}
        r = requests.get(url, headers=headers, timeout=30)
        assert r.status_code == code, (token, r.text)
        assert r.headers["Content-Type"].startswith("application/json")
        assert message in r.json()["message"]
    participant = podlab.token_for("podlab-02", "participant")
    unknown = requests.get(url.replace("podlab", "nosuch"),
                           headers={"Authorization": f"token {participant}"}, timeout=30)
    assert unknown.status_code == 404 and "no workshop named 'nosuch'" in unknown.json()["message"]
    # an admin may check what participants receive
    r = requests.get(url, headers={"Authorization": f"token {admin}"}, timeout=30)
    assert r.status_code == 200 and r.headers["X-CScale-Materials-Files"] == "3"
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["01-intro.ipynb", "data/points.csv", "run.sh"]
        assert {m.uname for m in tar.getmembers()} == {""}

    # the init container with a refused token says why and does not fail the pod
    target = tmp_path / "copy"
    r = subprocess.run(
        [sys.executable, "-m", "cscale_extensions.workshop.fetch", url, str(target)],
        env={**os.environ, "JUPYTERHUB_API_TOKEN": outsider},
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0
    assert "not copied (HTTP 403: demo-member is not a participant of workshop podlab)" in r.stdout
    assert not target.exists()


def test_hub_down_is_reported_and_retried_at_next_start(tmp_path):
    """Nothing listens at the URL: the init container reports it after its tries."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = tmp_path / "copy"
    r = subprocess.run(
        [sys.executable, "-m", "cscale_extensions.workshop.fetch", "--attempts", "2",
         f"http://127.0.0.1:{port}/hub/cscale/workshops/x/materials", str(target)],
        env={**os.environ, "JUPYTERHUB_API_TOKEN": "t"}, capture_output=True, text=True,
        timeout=120,
    )
    assert r.returncode == 0
    assert "not copied (URLError: [Errno 111] Connection refused)" in r.stdout
    assert "the next start tries again" in r.stdout
    assert not target.exists() and list(tmp_path.iterdir()) == []


async def spawns(ws_stack, c: Config, username: str, steps) -> list[list[dict]]:
    """Spawn ``username``'s pod once per token in ``steps`` with ONE spawner (as the hub keeps
    it between spawns); a callable in ``steps`` runs (in a thread) between spawns instead.
    Returns the init containers of each pod."""
    spawner = kube_spawner(c, username, [], hub_url=hub_url(ws_stack))
    out = []
    try:
        for step in steps:
            if callable(step):
                await asyncio.to_thread(step)
            else:
                out.append((await spawn_pod(c, spawner, step))["spec"]["initContainers"])
    finally:
        await spawner.api.api_client.close()
    return out


def token_of(init: dict) -> str:
    return next(e["value"] for e in init["env"] if e["name"] == "JUPYTERHUB_API_TOKEN")


def test_spawns_of_others_and_after_the_end_get_no_materials(ws_stack, admin, podlab, tmp_path):
    """Only a participant's pod fetches materials, each spawn with its own token, one container
    however often the (long-lived) spawner spawns, none after the workshop ended."""
    c = kube_config(ws_stack, tmp_path)
    (outsider,) = asyncio.run(spawns(ws_stack, c, "outsider", ["t0"]))
    assert [i["name"] for i in outsider] == ["seed-notebooks"]

    def end() -> None:
        assert workshop_cli(ws_stack, admin, "end", "podlab") == 0

    first, second, after_end = asyncio.run(
        spawns(ws_stack, c, "podlab-02", ["token-of-spawn-1", "token-of-spawn-2", end, "t3"])
    )
    for inits, token in ((first, "token-of-spawn-1"), (second, "token-of-spawn-2")):
        assert [i["name"] for i in inits] == ["seed-notebooks", INIT_CONTAINER]
        assert token_of(inits[1]) == token
    assert [i["name"] for i in after_end] == ["seed-notebooks"]
    participant = podlab.token_for("podlab-02", "after the end")
    url = f"{hub_url(ws_stack)}/hub/cscale/workshops/podlab/materials"
    r = requests.get(url, headers={"Authorization": f"token {participant}"}, timeout=30)
    assert r.status_code == 410 and "workshop podlab ended at" in r.json()["message"]


def test_archive_members_outside_the_copy_are_refused(tmp_path):
    """A hostile archive (a member climbing out of the copy, a link) writes nothing."""
    absolute = tmp_path / "absolute.txt"
    cases = (("../escaped.txt", tarfile.REGTYPE), (str(absolute), tarfile.REGTYPE),
             ("link", tarfile.SYMTYPE))
    for n, (name, kind) in enumerate(cases):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
            data = b"x" if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        buf.seek(0)
        home = tmp_path / f"home{n}"  # "../escaped.txt" would land here, beside the copy
        home.mkdir()
        with pytest.raises(WorkshopError, match=f"materials archive: '{name}' is not a file"):
            materials.unpack_for_user(buf, home / "copy")
        assert list(home.iterdir()) == []
    assert not absolute.exists()
