"""TLS between the proxy and user servers: a server is who it claims to be, or gets nothing.

On one machine every account can bind any free loopback port. When a user's server dies (an
OOM kill, a crash), the proxy keeps routing to its address until the hub notices; another
account that binds that address meanwhile would receive the victim's requests, cookies
included (``jupyterhub-user-<name>`` holds an OAuth token for the victim's server). Here each
account's servers listen on an address of their own in ``127.0.0.0/8`` (:func:`server_ip`,
from the uid) and serve HTTPS with a certificate that names only that address and the
account's own host (``<user>.<hub host>``), signed by the platform's CA for user servers
(:class:`ServerCA`, in ``<data_dir>/server-tls``, its key root-only). The proxy
(``--client-ssl-ca``, set by the launcher) verifies it for every connection against the
request's host (with host routing, only requests for the victim's own host reach the
victim's route), the hub against the address: a squatter has no certificate naming either
(hers names her own), so the handshake fails and the request is never sent; the proxy
answers with its error page. Without user subdomains every request carries the hub's host,
so no certificate could tell users apart: servers stay on plain HTTP there. In both modes
the spawner reports a server's exit at once, so its route goes within a fraction of a second.

Root writes keys and certificates only into root-owned directories
(``users/<name>/``: 0750, group the account's own group, the key 0640): the account reads its
key there, nobody else can, and nothing is written into a home.

JupyterHub's ``internal_ssl`` was not used: on one host every server certificate it issues
names ``127.0.0.1``, so any user's server could answer for any other's port, and it puts TLS
with client certificates on the hub's API for every service and every user process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: the CA's directory under the data dir (the launcher creates it, the spawner issues from it)
DATA_SUBDIR = "server-tls"
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
#: the per-account server addresses start here (127.64.0.0 + uid, up to 127.127.255.255)
BASE = int(ipaddress.IPv4Address("127.64.0.0"))
MAX_UID = (1 << 22) - 1
CERT_DAYS = 397
CA_DAYS = 3650


def server_ip(uid: int) -> str:
    """The loopback address the servers of account ``uid`` listen on (one per account)."""
    if not 0 < uid <= MAX_UID:
        raise ValueError(f"uid {uid} outside 1..{MAX_UID}: no server address for it")
    return str(ipaddress.IPv4Address(BASE + uid))


@dataclass(frozen=True)
class ServerCert:
    keyfile: str
    certfile: str
    cafile: str


def _write_private(path: Path, data: bytes, mode: int, gid: int = -1) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file in the same root-owned
    directory, renamed over it)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        if gid != -1:
            os.fchown(fd, 0 if os.geteuid() == 0 else -1, gid)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _root_dir(path: Path, mode: int, gid: int = -1) -> None:
    """Create ``path`` (or check it): a directory, not a link, owned by this process."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, mode)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise PermissionError(f"{path}: not a directory of uid {os.geteuid()}; refused")
    if gid != -1 and st.st_gid != gid:
        os.chown(path, -1, gid, follow_symlinks=False)
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class ServerCA:
    """The CA of user servers' certificates, in ``directory`` (root's, 0711: no listing)."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    @property
    def cert_path(self) -> Path:
        return self.dir / CA_CERT

    def ensure(self) -> Path:
        """Create the CA once; returns the certificate's path (what the proxy trusts)."""
        _root_dir(self.dir, 0o711)  # accounts traverse to users/<name>/ (the key: 0600)
        if (self.dir / CA_KEY).exists() and self.cert_path.exists():
            return self.cert_path
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("C-SCALE Hub user servers CA"))
            .issuer_name(_name("C-SCALE Hub user servers CA"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256())
        )
        _write_private(self.dir / CA_KEY, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()), 0o600)
        _write_private(self.cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return self.cert_path

    def _load(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        key = serialization.load_pem_private_key((self.dir / CA_KEY).read_bytes(), None)
        return cert, key  # type: ignore[return-value]

    def hub_client(self) -> ServerCert:
        """The hub's client pair (root-only), for its check that a new server is up."""
        self.ensure()
        key, cert = self.dir / "hub.key", self.dir / "hub.crt"
        if not (key.exists() and cert.exists()):
            self._issue(self.dir, "hub", "127.0.0.1", client=True)
        return ServerCert(str(key), str(cert), str(self.cert_path))

    def issue(self, account: str, server: str, ip: str, gid: int,
              host: str = "") -> ServerCert:
        """A fresh key and certificate naming only ``ip`` and the account's own ``host``, for
        the server named ``server`` of ``account``, in ``<dir>/users/<account>/`` (root's,
        group ``gid``, 0750; the key 0640): readable by that account's own group only."""
        if not account or "/" in account or account.startswith("."):
            raise ValueError(f"{account!r} is not a file name")
        self.ensure()
        users = self.dir / "users"
        _root_dir(users, 0o711)
        home = users / account
        _root_dir(home, 0o750, gid)
        stem = "server-" + hashlib.sha256(server.encode()).hexdigest()[:16]
        return self._issue(home, stem, ip, gid=gid, host=host)

    def _issue(self, directory: Path, stem: str, ip: str, *, gid: int = -1,
               client: bool = False, host: str = "") -> ServerCert:
        ca_cert, ca_key = self._load()
        name = directory.name if stem.startswith("server-") else stem
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(ip)),
                 *([x509.DNSName(host)] if host else [])]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        keyfile, certfile = directory / f"{stem}.key", directory / f"{stem}.crt"
        _write_private(keyfile, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()), 0o640 if gid != -1 else 0o600, gid)
        _write_private(certfile, cert.public_bytes(serialization.Encoding.PEM), 0o644, gid)
        return ServerCert(str(keyfile), str(certfile), str(self.cert_path))
