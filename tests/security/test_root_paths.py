"""Root never operates on a path a user can influence, except as that user.

The attacker is an ordinary VO member with a shell in their own server. They plant symbolic
links where the hub (root) used to read and write at every spawn (the workflow notebooks'
manifest, its temporary file, the target directory itself) and restart their server; they
start a Dask cluster, whose set-up used to chown ``/`` to them. What must hold: nothing
root-only is read into, written or created, no system path changes owner; the user's own
cluster files (and only those) are theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from dask_gateway_server.backends.local import LocalBackend

from cscale_extensions.gateway import TLSPathsFix
from cscale_extensions.kernelclient import run_in_kernel

rel = pytest.mark.reliability
pytestmark = pytest.mark.skipif(
    os.getuid() != 0, reason="the platform runs as root: that is what is tested"
)
USER = "sec-planter"
MANIFEST = "workflow_notebooks/.cscale-sync.json"


# --------------------------------------------------------------------------- helpers


def _fingerprint(path: Path) -> tuple[int, int, int, str]:
    st = os.lstat(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
    return st.st_uid, st.st_gid, st.st_mode, digest


def _root_only(sec, name: str, content: str, mode: int = 0o600) -> Path:
    """A root-owned file in the data dir (not in any home)."""
    path = sec.stack.state_dir / f"{name}-{uuid.uuid4().hex[:8]}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    os.chmod(path, mode)
    return path


def _files_owned_by(root: Path, uid: int):
    for dirpath, _dirs, files in os.walk(root):  # never follows links
        for name in files:
            p = Path(dirpath, name)
            st = os.lstat(p)
            if st.st_uid == uid and stat.S_ISREG(st.st_mode):
                yield p


@pytest.fixture(scope="module")
def planter(sec):
    sec.member(USER)
    token = sec.token(USER)
    url = sec.start_server(token, USER)
    home = sec.stack.state_dir / "homes" / USER
    uid = pwd.getpwnam(USER).pw_uid
    assert (home / MANIFEST).is_file(), "the first spawn synchronises the notebooks"
    written = [home / MANIFEST, *(home / "workflow_notebooks").glob("*.ipynb")]
    assert len(written) > 1 and all(os.lstat(p).st_uid == uid for p in written)  # as the user
    return SimpleNamespace(token=token, url=url, home=home, uid=uid)


def _as_user(p, code: str) -> str:
    """Run ``code`` in the attacker's own kernel (as their account)."""
    return run_in_kernel(p.url, p.token, code)


def _restart(sec, p) -> None:
    api = sec.api(p.token)
    api.delete(sec.url + f"hub/api/users/{USER}/server", timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        model = api.get(sec.url + f"hub/api/users/{USER}", timeout=30).json()
        if not model.get("servers"):
            break
        time.sleep(0.5)
    p.url = sec.start_server(p.token, USER)


# --------------------------------------------------------------------------- notebook sync


@rel(
    injected="~/workflow_notebooks/.cscale-sync.json planted as a link to a root-only (0600) "
    "JSON file with a secret; server restarted",
    expected="the secret is in no user-owned file; the root-only file unchanged; server starts",
)
def test_manifest_link_to_root_only_file_reads_nothing(sec, planter):
    secret = secrets.token_hex(16)
    target = _root_only(sec, "root-only.json", json.dumps({"secret": secret}))
    before = _fingerprint(target)
    _as_user(planter, f"import os; m = {MANIFEST!r}; os.remove(m); os.symlink({str(target)!r}, m)")
    _restart(sec, planter)
    assert _fingerprint(target) == before
    leaked = [str(f) for f in _files_owned_by(sec.stack.state_dir, planter.uid)
              if secret.encode() in f.read_bytes()]
    assert not leaked, f"root copied a root-only file into user-owned files: {leaked}"
    assert not (planter.home / MANIFEST).is_symlink()  # replaced, not written through


@rel(
    injected="~/workflow_notebooks/.cscale-sync.json.tmp planted as a link to a root-owned "
    "file; server restarted",
    expected="the root-owned file unchanged (content, owner, mode)",
)
def test_manifest_tmp_link_writes_nothing_as_root(sec, planter):
    target = _root_only(sec, "root-owned.txt", "precious\n", mode=0o644)
    before = _fingerprint(target)
    tmp = MANIFEST + ".tmp"
    _as_user(planter, f"import os; os.symlink({str(target)!r}, {tmp!r})")
    _restart(sec, planter)
    assert _fingerprint(target) == before, "root wrote through the user's link"
    assert (planter.home / MANIFEST).is_file()


@rel(
    injected="~/workflow_notebooks replaced by a link to a root-owned directory; server "
    "restarted",
    expected="nothing created in that directory; the server still starts",
)
def test_target_dir_link_creates_nothing_as_root(sec, planter):
    victim = sec.stack.state_dir / f"root-dir-{uuid.uuid4().hex[:8]}"
    victim.mkdir(mode=0o755)
    _as_user(
        planter,
        "import os, shutil; shutil.rmtree('workflow_notebooks'); "
        f"os.symlink({str(victim)!r}, 'workflow_notebooks')",
    )
    try:
        _restart(sec, planter)  # raises if the spawn fails
        assert list(victim.iterdir()) == [], "root created files in a root-owned directory"
        assert os.lstat(victim).st_uid == 0
    finally:  # give the user a plain directory back for the other tests
        (planter.home / "workflow_notebooks").unlink()


# --------------------------------------------------------------------------- Dask working dir


@rel(
    injected="a user starts a Dask cluster (LocalBackend as root, TLS paths passed upstream as "
    "characters)",
    expected="`/` still owned by root; the cluster's directory, certs and TLS files the user's, "
    "its logs directory root's",
)
def test_dask_cluster_start_leaves_root_alone(sec, planter):
    root_before = os.stat("/")
    name = _as_user(planter, "\n".join([
        "from dask_gateway import Gateway",
        "c = Gateway().new_cluster(shutdown_on_close=False)",
        "print(c.name)",
    ])).strip().splitlines()[-1]
    workdir = sec.stack.state_dir / "dask-gateway" / "clusters" / name
    try:
        st = os.stat("/")
        assert (st.st_uid, st.st_gid) == (root_before.st_uid, root_before.st_gid), (
            f"starting a Dask cluster made uid {st.st_uid} the owner of /"
        )
        for p in (workdir, workdir / ".certs",
                  workdir / ".certs" / "dask.crt", workdir / ".certs" / "dask.pem"):
            assert os.lstat(p).st_uid == planter.uid, f"{p} is not the user's"
        assert os.lstat(workdir.parent).st_uid == 0
        logs = workdir.parent.parent / "cluster-logs" / name  # root creates files there
        assert os.lstat(logs).st_uid == 0 and (logs / "scheduler.log").is_file()
    finally:
        st = os.stat("/")
        if (st.st_uid, st.st_gid) != (root_before.st_uid, root_before.st_gid):
            os.chown("/", root_before.st_uid, root_before.st_gid)  # repair the machine
        _as_user(planter, f"from dask_gateway import Gateway; Gateway().stop_cluster({name!r})")


# --------------------------------------------------------------------------- fast unit test


class _Upstream:
    """dask-gateway 2026.3's own working-directory code (LocalBackend's methods, unchanged),
    except that its set_file_permissions only records what it was given: so the old filter,
    which passed ``/`` on, is caught without chowning the machine's root."""

    setup_working_directory = LocalBackend.setup_working_directory
    _get_tls_paths = LocalBackend._get_tls_paths
    get_certs_directory = LocalBackend.get_certs_directory
    get_logs_directory = LocalBackend.get_logs_directory
    cleanup_working_directory = LocalBackend.cleanup_working_directory
    start_process = LocalBackend.start_process
    make_preexec_fn = LocalBackend.make_preexec_fn
    log = logging.getLogger("test")

    def __init__(self, clusters_directory: str):
        self.clusters_directory = clusters_directory
        self.passed_on: list[str] = []

    def set_file_permissions(self, paths, username):
        self.passed_on.extend(paths)


class _Backend(TLSPathsFix, _Upstream):
    pass


def test_tls_paths_fix_chowns_only_the_clusters_own_files(tmp_path):
    """Upstream passes [workdir, certs, logs, *"<workdir>/.certs/dask.crt",
    *"<workdir>/.certs/dask.pem"] (characters, ``/`` among them): only the cluster's working
    directory, its certs directory and the two TLS files become the user's, ``/`` is never
    chowned, nothing is passed on to upstream's chown; the logs are root's, outside."""
    clusters = tmp_path / "clusters"
    clusters.mkdir()
    nobody = pwd.getpwnam("nobody")
    cluster = SimpleNamespace(name=uuid.uuid4().hex, username="nobody",
                              tls_cert=b"cert", tls_key=b"key")
    backend = _Backend(str(clusters))
    root_before = os.stat("/")
    workdir = Path(backend.setup_working_directory(cluster))
    assert "/" not in backend.passed_on, "the filter passed '/' on to be chowned"
    assert backend.passed_on == []
    assert os.stat("/").st_uid == root_before.st_uid
    assert workdir.parent == clusters
    own = [workdir, workdir / ".certs", workdir / ".certs" / "dask.crt",
           workdir / ".certs" / "dask.pem"]
    assert [os.lstat(p).st_uid for p in own] == [nobody.pw_uid] * 4
    assert sorted(os.listdir(workdir)) == [".certs"]
    assert os.lstat(clusters).st_uid == 0 and os.lstat(tmp_path).st_uid == 0
    logs = os.lstat(tmp_path / "cluster-logs" / cluster.name)
    assert (logs.st_uid, logs.st_gid, stat.S_IMODE(logs.st_mode)) == (0, nobody.pw_gid, 0o750)
    backend.cleanup_working_directory(str(workdir))
    assert not workdir.exists() and not (tmp_path / "cluster-logs" / cluster.name).exists()


def test_cluster_logs_are_not_created_through_a_link_the_user_planted(nobody_home):
    """The user owns their cluster's working directory and puts a link ``logs`` -> a
    root-owned directory there before a worker starts: root creates the worker's log file
    in the cluster's own, root-owned logs directory, nothing in the linked one."""
    base = nobody_home[0].parent
    clusters, victim = base / "clusters", base / "victim"
    clusters.mkdir(mode=0o755)
    victim.mkdir(mode=0o755)
    cluster = SimpleNamespace(name=uuid.uuid4().hex, username="nobody",
                              tls_cert=b"cert", tls_key=b"key", state={})
    backend = _Backend(str(clusters))
    workdir = backend.setup_working_directory(cluster)
    cluster.state["workdir"] = workdir
    planted = Path(workdir, "logs")
    if planted.is_dir() and not planted.is_symlink():
        shutil.rmtree(planted)  # (the old layout: the user's own logs directory)
    planted.symlink_to(victim)
    pid = asyncio.run(
        backend.start_process(cluster, ["/bin/true"], {"PATH": "/usr/bin:/bin"}, "worker-x")
    )
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    assert list(victim.iterdir()) == [], "root created a file through the user's link"
    assert (base / "cluster-logs" / cluster.name / "worker-x.log").is_file()


def test_tls_paths_fix_refuses_calls_outside_cluster_setup(tmp_path):
    """A stray call with arbitrary paths (``/``, ``/etc``) chowns nothing."""
    backend = _Backend(str(tmp_path))
    with pytest.raises(PermissionError):
        backend.set_file_permissions(["/", "/etc"], "nobody")
    assert os.stat("/").st_uid == 0 and os.stat("/etc").st_uid == 0


def test_tls_paths_fix_does_not_follow_a_linked_workdir(tmp_path):
    """A cluster directory that is a link (to a root-owned directory elsewhere) is refused:
    the directory it points to stays root's."""
    clusters, elsewhere = tmp_path / "clusters", tmp_path / "elsewhere"
    clusters.mkdir()
    elsewhere.mkdir()
    cluster = SimpleNamespace(name=uuid.uuid4().hex, username="nobody",
                              tls_cert=b"cert", tls_key=b"key")
    (clusters / cluster.name).symlink_to(elsewhere)
    with pytest.raises(OSError):
        _Backend(str(clusters)).setup_working_directory(cluster)
    assert os.lstat(elsewhere).st_uid == 0
    assert all(os.lstat(p).st_uid == 0 for p in elsewhere.rglob("*"))


# --------------------------------------------------------------------------- workshop exports


@pytest.fixture
def nobody_home():
    base = Path(tempfile.mkdtemp(prefix="cscale-rp-", dir="/tmp"))
    os.chmod(base, 0o755)
    home = base / "nobody-home"
    home.mkdir(mode=0o700)
    nobody = pwd.getpwnam("nobody")
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    exports = base / "exports"
    exports.mkdir(mode=0o700)
    try:
        yield home, exports, nobody
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_workshop_export_reads_the_home_with_the_owners_rights(nobody_home):
    """``workshop end`` (root) archives a home: a file there that only root may read (put
    there by root, or reached through a swapped directory) is not in the participant's
    archive; the participant's own files are, links as links; the archive is root's, 0600."""
    from cscale_extensions.workshop.end import export_home

    home, exports, nobody = nobody_home
    subprocess.run(
        ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
         "sh", "-c", "echo mine > notes.txt && ln -s /etc/shadow shadow-link"],
        cwd=home, check=True,
    )
    secret = secrets.token_hex(8)
    fd = os.open(home / "root-only.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret)
    archive = exports / "nobody.tar.gz"
    assert export_home(home, archive, []) == 1
    st = os.stat(archive)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile("nobody-home/notes.txt").read() == b"mine\n"
        assert members["nobody-home/shadow-link"].issym()
        assert "nobody-home/root-only.txt" not in members
        data = b"".join(tar.extractfile(m).read() for m in members.values() if m.isfile())
    assert secret.encode() not in data


# --------------------------------------------------------------------------- home creation


@pytest.fixture
def system_spawner(nobody_home):
    """A real SystemUserSpawner (real POSIX account, removed afterwards) with its homes
    directory in a fresh root-owned directory."""
    from cscale_testing import kube_spawner
    from traitlets.config import Config

    from cscale_extensions.hub.spawner import SystemUserSpawner

    homes = nobody_home[0].parent / "homes"
    homes.mkdir(mode=0o755)
    c = Config()
    c.JupyterHub.spawner_class = SystemUserSpawner
    c.SystemUserSpawner.homes_dir = str(homes)
    name = f"rp-home-{uuid.uuid4().hex[:6]}"
    spawner = kube_spawner(c, name, [])
    try:
        yield spawner, homes / name
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


def test_home_is_created_once_and_an_existing_one_is_never_chowned(system_spawner):
    """Root creates a missing home (0700, the account's); a home path that is a link or a
    directory of someone else is refused with a clear message, and nothing is chowned."""
    from tornado import web

    spawner, home = system_spawner
    created, entry = spawner.ensure_home()
    st = os.lstat(created)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (entry.pw_uid, 0o700)
    os.rmdir(created)
    elsewhere = home.parent.parent / "victim"
    elsewhere.mkdir(mode=0o755)
    for planted in ("link", "foreign dir"):
        if planted == "link":
            home.symlink_to(elsewhere)
        else:
            home.mkdir(mode=0o755)
        with pytest.raises(web.HTTPError) as err:
            spawner.ensure_home()
        assert err.value.status_code == 500 and "not in order" in err.value.log_message
        assert os.lstat(elsewhere).st_uid == 0 and os.lstat(home).st_uid == 0
        if planted == "link":
            home.unlink()
        else:
            home.rmdir()
