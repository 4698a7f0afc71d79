"""A user server starts without running node: two questions it asked node are answered here.

Every Jupyter server start ran two node processes (strace of a server start; process
accounting over a 20-user storm: 0.15–0.55 CPU-s each, ~0.7 CPU-s of a ~3.5 CPU-s start):

- ``import jupyterlab.labapp`` computes the app version through ``jupyterlab.commands``, whose
  ``AppOptions.registry`` default runs ``node yarn.js config --json`` (``_yarn_config``) for
  the npm registry. With the yarn JupyterLab 4 bundles (3.x) that answer is always empty:
  JupyterLab's parser reads yarn 1's output format, which yarn 3 does not print, so the
  registry is JupyterLab's default whatever is configured (``tests/unit/test_nodefree.py``
  checks this against the real call).
- jupyter-lsp looks for node-based language servers in ``npm prefix -g`` (``_npm_prefix``).

:func:`install` answers both without node: the yarn configuration as that call returns it
(empty), the global prefix from what npm itself reads — ``$npm_config_prefix``, a ``prefix=``
line of ``~/.npmrc`` or of the global ``npmrc`` next to node, else the directory above node's
(npm's default; simplified: a project ``.npmrc`` and ``$NPM_CONFIG_USERCONFIG`` are not
read). It must run before
JupyterLab is imported, so the hub's server command (:mod:`cscale_extensions.singleuser.launch`)
calls it first; it runs in the user's own server process.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any


def _env(name: str) -> str | None:
    return os.environ.get(name) or os.environ.get(name.upper()) or None


def yarn_config(logger: Any = None) -> dict[str, dict[str, str]]:
    """``jupyterlab.commands._yarn_config``'s answer with its bundled yarn 3, without node."""
    return {"yarn config": {}, "npm config": {}}


def _npmrc_prefix(path: Path) -> str | None:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.strip() == "prefix" and value.strip():
            return os.path.expanduser(value.strip())
    return None


def npm_prefix() -> str | None:
    """What ``npm prefix -g`` prints, without node (None if node is not installed)."""
    if found := _env("npm_config_prefix"):
        return found
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        return None
    default = Path(os.path.realpath(node)).parent.parent
    for rc in (Path.home() / ".npmrc", default / "etc" / "npmrc"):
        if found := _npmrc_prefix(rc):
            return found
    return str(default)


def install() -> None:
    """Replace JupyterLab's and jupyter-lsp's node calls (before either is imported elsewhere)."""
    try:
        from jupyterlab import commands
    except ImportError:
        pass
    else:
        commands._yarn_config = yarn_config
    try:
        from jupyter_lsp import types
    except ImportError:
        return

    def _npm_prefix(self: Any, npm: str) -> str | None:
        return npm_prefix()

    types.LanguageServerManagerAPI._npm_prefix = _npm_prefix
