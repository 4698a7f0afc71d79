"""`cscale-hub up`: the whole platform on one machine, with the same hub config as the chart.

The launcher resolves the configuration (data dir, free ports, secrets), writes it to
``<data_dir>/runtime/config.json`` for ``hub_config/`` to load, and starts, in order: the
embedded OIDC provider (when ``auth.issuer`` is null), the embedded STAC federation (when
``federation.embedded_sites``), the embedded HPC site (a single-node Slurm,
:mod:`.slurm`, for each enabled ``compute.sites`` entry with ``slurm.embedded``),
configurable-http-proxy and JupyterHub; all but the hub need nothing of each other and start
together (:attr:`~.supervisor.ProcessSpec.needs`), the hub once they all answer. JupyterHub itself
starts its managed services (dask-gateway, idle culler, EO-MQS, runs) from that config.
A later service is added as configuration (a port in ``runtime.service_ports`` and a spec in
``cscale_extensions.hub``), not as launch code here.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import os
import secrets
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from cscale_extensions import config as settings
from cscale_extensions.hub import PLATFORM_SERVICES, SECRET_ENV, servertls
from cscale_extensions.hub.environment import public_url
from cscale_extensions.hub.origins import subdomain_host
from cscale_extensions.localstack.slurm import embedded_sites as embedded_slurm_sites
from cscale_extensions.localstack.supervisor import (
    ChildFailed,
    ProcessSpec,
    RestartPolicy,
    Supervisor,
)
from cscale_extensions.net import free_port, port_open

log = logging.getLogger("cscale.launcher")
REPO_ROOT = Path(__file__).resolve().parents[2]


def default_data_dir() -> Path:
    """/var/lib/cscale-hub for root (homes must be reachable by user accounts), else XDG data home."""
    if os.getuid() == 0:
        return Path("/var/lib/cscale-hub")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cscale-hub"


def node_modules() -> Path:
    return Path(os.environ.get("CSCALE_NODE_MODULES") or REPO_ROOT / "node_modules")


class Secrets:
    """Random secrets created once and kept in ``<data_dir>/secrets`` (mode 0700/0600)."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)

    def get(self, name: str, nbytes: int = 32, fernet: bool = False) -> str:
        """The secret ``name``; hex, or a urlsafe-base64 32-byte Fernet key when ``fernet``."""
        path = self.dir / name
        if path.exists():
            return path.read_text().strip()
        if fernet:
            value = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        else:
            value = secrets.token_hex(nbytes)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value)
        return value


def _pick(port: int, ip: str = "127.0.0.1") -> int:
    return port or free_port(ip)


def optional_services(cfg: dict[str, Any]) -> list[str]:
    """The platform services enabled in the config."""
    return [name for name, section in PLATFORM_SERVICES.items() if cfg.get(section, {}).get("enabled", True)]


class Platform:
    """The resolved local platform: its configuration, processes and supervisor."""

    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg
        p = cfg["platform"]
        self.data_dir = Path(p["data_dir"] or default_data_dir()).resolve()
        p["data_dir"] = str(self.data_dir)
        p["deployment"] = "local"
        p["stack_id"] = p["stack_id"] or uuid.uuid4().hex
        cfg["runtime"]["repo_root"] = cfg["runtime"]["repo_root"] or str(REPO_ROOT)
        for sub, mode in (("", 0o755), ("hub", 0o700), ("logs", 0o700), ("runtime", 0o700), ("homes", 0o755),
                          ("runs", 0o700)):
            d = self.data_dir / sub
            d.mkdir(mode=mode, parents=True, exist_ok=True)
            os.chmod(d, mode)
        self.secrets = Secrets(self.data_dir / "secrets")
        self.supervisor = Supervisor(self.data_dir / "logs", p["stack_id"])
        self.specs: list[ProcessSpec] = []
        self.credentials: dict[str, str] = {}
        self._resolve()

    # -- resolution -------------------------------------------------------------------------
    def _resolve(self) -> None:
        cfg = self.cfg
        h = cfg["hub"]
        if h["port"] and port_open(h["ip"], h["port"]):
            raise SystemExit(
                f"error: port {h['port']} on {h['ip']} is in use; stop what uses it or pass --port 0"
            )
        h["port"] = _pick(h["port"], h["ip"])
        h["hub_port"] = _pick(h["hub_port"])
        h["proxy_api_port"] = _pick(h["proxy_api_port"])
        dg = cfg["dask_gateway"]
        for key in ("port", "scheduler_port", "api_port"):
            dg[key] = _pick(dg[key])
        ports = cfg["runtime"]["service_ports"]
        for name in optional_services(cfg):
            ports[name] = ports.get(name) or free_port()
        # users on hosts of their own: the proxy routes by host (fails early on an IP public URL)
        host_routing = bool(subdomain_host(cfg, public_url(cfg)))

        self.env = {
            settings.CONFIG_ENV: str(self.data_dir / "runtime" / "config.json"),
            "CONFIGPROXY_AUTH_TOKEN": self.secrets.get("proxy_auth_token"),
            "JUPYTERHUB_CRYPT_KEY": self.secrets.get("crypt_key"),
            "DASK_GATEWAY_ENCRYPT_KEYS": self.secrets.get("dask_gateway_key", fernet=True),
            "CSCALE_ADMIN_API_TOKEN": self.secrets.get("admin_api_token"),
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        }
        a = cfg["auth"]
        if not a["issuer"]:
            from cscale_extensions.localstack.oidc.embedded import (
                demo_credentials,
                provider_process,
            )

            client_secret = self.secrets.get("oidc_client_secret")
            spec, issuer = provider_process(
                cfg, self.data_dir, client_secret=client_secret,
                redirect_uri=public_url(cfg) + "hub/oauth_callback",
            )
            a["issuer"] = issuer
            self.env[SECRET_ENV] = client_secret
            spec.needs = ()
            self.specs.append(spec)
            self.credentials = demo_credentials(cfg, self.data_dir)
        elif os.environ.get(SECRET_ENV):
            self.env[SECRET_ENV] = os.environ[SECRET_ENV]

        fed = cfg["federation"]
        if fed["embedded_sites"] and importlib.util.find_spec("cscale_extensions.localstack.sites"):
            from cscale_extensions.localstack.sites import embedded_federation

            specs, sites = embedded_federation(cfg, self.data_dir)
            self.specs.extend(specs)
            fed["sites"] = [*sites, *fed["sites"]]

        # the embedded HPC site (a single-node Slurm); fills in its SLURM_CONF and ports
        for spec in embedded_slurm_sites(cfg, self.data_dir):
            spec.needs = ()
            self.specs.append(spec)

        settings.validate(cfg)
        path = Path(self.env[settings.CONFIG_ENV])
        path.write_text(json.dumps(cfg, indent=1))
        os.chmod(path, 0o600)

        chp = node_modules() / ".bin" / "configurable-http-proxy"
        # user servers speak HTTPS with certificates of this CA, verified for every request
        server_ca = servertls.ServerCA(self.data_dir / servertls.DATA_SUBDIR).ensure()
        hub_url = f"http://127.0.0.1:{h['hub_port']}"
        self.specs.append(ProcessSpec(
            name="proxy",
            argv=[str(chp), "--ip", h["ip"], "--port", str(h["port"]),
                  "--api-ip", "127.0.0.1", "--api-port", str(h["proxy_api_port"]),
                  "--default-target", hub_url, "--error-target", f"{hub_url}{h['base_url']}hub/error",
                  "--client-ssl-ca", str(server_ca),
                  "--log-level", "warn", *(["--host-routing"] if host_routing else [])],
            env=self.env, ready_port=h["proxy_api_port"], ready_timeout=30, needs=(),
        ))
        self.specs.append(ProcessSpec(
            name="hub",
            # `jupyterhub -f …` with jsonschema's IRI checker loaded lazily (fastimport: ~2 s)
            argv=[sys.executable, "-P", "-m", "cscale_extensions.fastimport", "jupyterhub",
                  "-f", str(Path(cfg["runtime"]["repo_root"]) / "hub_config" / "jupyterhub_config.py")],
            env=self.env, cwd=str(self.data_dir / "hub"),
            ready_url=f"{hub_url}{h['base_url']}hub/health", ready_timeout=120,
            stop_timeout=30,  # needs: everything above (the provider, the sites, the proxy)
        ))

    # -- running ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return public_url(self.cfg)

    def state(self, status: str, **extra: Any) -> None:
        """Write ``runtime/stack.json`` (what tests and tools read to find the stack)."""
        doc = {
            "status": status, "pid": os.getpid(), "url": self.url,
            "stack_id": self.cfg["platform"]["stack_id"], "data_dir": str(self.data_dir),
            "config": self.env[settings.CONFIG_ENV], "issuer": self.cfg["auth"]["issuer"],
            "services": self.cfg["runtime"]["service_ports"], **extra,
        }
        path = self.data_dir / "runtime" / "stack.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, path)

    def start(self) -> None:
        self.state("starting")
        self.supervisor.start_all(self.specs)
        self.wait_for_service_routes()
        self.state("ready")

    def wait_for_service_routes(self, timeout: float = 90) -> None:
        """Wait until the proxy routes every hub service with a URL (the hub adds them late)."""
        h = self.cfg["hub"]
        # with host routing the proxy names routes /<host>/<path>
        wanted = {f"{h['base_url']}services/{name}" for name in self.route_names()}
        url = f"http://127.0.0.1:{h['proxy_api_port']}/api/routes"
        auth = {"Authorization": f"token {self.env['CONFIGPROXY_AUTH_TOKEN']}"}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            routes = {r.rstrip("/") for r in httpx.get(url, headers=auth, timeout=5)
                      .raise_for_status().json()}
            routes |= {"/" + r.split("/", 2)[2] for r in routes if r.count("/") >= 2}
            if wanted <= routes:
                return
            if self.supervisor.dead():
                return
            time.sleep(0.3)
        raise ChildFailed(f"the hub did not route its services {sorted(wanted - routes)} "
                          f"within {timeout:.0f}s; see {self.data_dir / 'logs' / 'hub.log'}")

    def route_names(self) -> list[str]:
        names = list(self.cfg["runtime"]["service_ports"])
        if self.cfg["dask_gateway"]["enabled"]:
            names.append("dask-gateway")
        return names

    def stop(self) -> None:
        self.state("stopping")
        self.supervisor.stop()
        self.state("stopped")

    def banner(self) -> str:
        lines = ["", "C-SCALE Hub is running.", f"  Open:   {self.url}"]
        if self.credentials:
            lines.append("  Demo logins (embedded identity provider):")
            for user, pw in self.credentials.items():
                lines.append(f"    {user:<15} {pw}")
        lines += [
            f"  Issuer: {self.cfg['auth']['issuer']}",
            f"  Data:   {self.data_dir}  (logs in {self.data_dir / 'logs'})",
            "  Stop with Ctrl-C.", "",
        ]
        return "\n".join(lines)


def restart_dead(
    supervisor: Supervisor, policy: RestartPolicy, dead: list[tuple[ProcessSpec, int]]
) -> bool:
    """Restart the children that exited, as the policy allows; False when the stack must stop.

    Servers and kernels run in their own process groups and outlive a crashed hub or proxy:
    the restarted hub finds them again (``hub.cleanup_servers`` is false) and re-adds the
    proxy's routes.
    """
    for spec, rc in dead:
        allowed, count = policy.allow(spec.name)
        print(
            f"error: {spec.name} exited with code {rc}; last lines of its log:\n"
            f"{supervisor.tail(spec.name)}",
            file=sys.stderr,
            flush=True,
        )
        if not allowed:
            print(
                f"error: {spec.name} exited {count + 1} times within "
                f"{policy.window:.0f}s (platform.restart_limit {policy.limit}): stopping the stack",
                file=sys.stderr,
                flush=True,
            )
            return False
        print(
            f"restarting {spec.name} ({count} of {policy.limit} within {policy.window:.0f}s)",
            file=sys.stderr,
            flush=True,
        )
        try:
            supervisor.restart(spec)
        except ChildFailed as exc:
            # e.g. the hub cannot start while the proxy is down too: the next round restarts
            # what is dead (in start order), still within the limit
            print(f"error: {exc}", file=sys.stderr, flush=True)
            continue
        print(f"{spec.name} is back", file=sys.stderr, flush=True)
    return True


def up(config: str | None, data_dir: str | None = None, port: int | None = None) -> int:
    """Run the platform in the foreground until SIGINT/SIGTERM or a child dies."""
    overrides: dict[str, Any] = {}
    if data_dir:
        overrides.setdefault("platform", {})["data_dir"] = data_dir
    if port is not None:
        overrides.setdefault("hub", {})["port"] = port
    try:
        cfg = settings.load(config, overrides)
    except settings.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    stopping = {"signal": None}

    def on_signal(signum, _frame):
        stopping["signal"] = signum
        raise KeyboardInterrupt

    # SIGINT too: a process started in the background by a shell inherits SIGINT ignored
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    platform = None
    code = 0
    if cfg["spawner"]["limits"]["mode"] != "off":
        from cscale_extensions.userlimits import protect_platform

        protect_platform()  # inherited by the proxy, hub and services; users' processes: +500
    try:
        platform = Platform(cfg)
        platform.start()
        print(platform.banner(), flush=True)
        policy = RestartPolicy(
            int(cfg["platform"]["restart_limit"]), float(cfg["platform"]["restart_window"])
        )
        while True:
            dead = platform.supervisor.dead()
            if dead and not restart_dead(platform.supervisor, policy, dead):
                code = 1
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping C-SCALE Hub …", flush=True)
    except ChildFailed as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        code = 1
    except (settings.ConfigError, ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        code = 2
    except Exception as exc:  # no traceback for operators; CSCALE_DEBUG=1 shows it
        if os.environ.get("CSCALE_DEBUG"):
            raise
        print(f"error: {type(exc).__name__}: {exc} (set CSCALE_DEBUG=1 for the traceback)",
              file=sys.stderr, flush=True)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if platform is not None:
            platform.stop()
            print("stopped.", flush=True)
    return code
