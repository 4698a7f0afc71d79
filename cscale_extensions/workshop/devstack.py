"""A local stack with the workshop wiring, for tests and benchmarks before the lead wires it.

``wired_repo_root()`` makes a directory whose ``hub_config/jupyterhub_config.py`` is the
platform's plus ``configure_workshops(c, cfg)`` (every other file links to the repository's);
pass it as ``runtime.repo_root`` to ``LocalStack``. Once ``cscale_extensions.hub.configure``
calls ``configure_workshops`` itself this indirection can go.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

WIRED_CONFIG = """\
from cscale_extensions import settings
from cscale_extensions.hub import configure
from cscale_extensions.workshop.hub import configure_workshops

c = get_config()  # noqa: F821
cfg = settings.load_resolved()
configure(c, cfg)
configure_workshops(c, cfg)
"""


def wired_repo_root() -> Path:
    """A repo root with the workshop-wired hub config in /tmp (mode 0755); the caller removes it."""
    root = Path(tempfile.mkdtemp(prefix="cscale-wsroot-", dir="/tmp"))
    os.chmod(root, 0o755)
    (root / "hub_config").mkdir()
    for f in (REPO / "hub_config").iterdir():
        if f.name != "jupyterhub_config.py" and f.is_file():
            (root / "hub_config" / f.name).symlink_to(f)
    (root / "hub_config" / "jupyterhub_config.py").write_text(WIRED_CONFIG)
    (root / "workflow_notebooks").symlink_to(REPO / "workflow_notebooks")
    return root
