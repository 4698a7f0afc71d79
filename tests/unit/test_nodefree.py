"""cscale_extensions.singleuser.nodefree gives the answers node would give, checked against the
real npm and JupyterLab's real yarn call on this machine (the independent oracles)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from cscale_extensions.singleuser import nodefree

pytestmark = pytest.mark.skipif(shutil.which("npm") is None, reason="npm is installed by setup")


def _real_prefix(env: dict[str, str]) -> str:
    out = subprocess.run(["npm", "prefix", "-g"], capture_output=True, text=True, env=env,
                         timeout=120, check=True)  # fmt: skip
    return out.stdout.strip()


@pytest.mark.parametrize("case", ["default", "env", "npmrc"])
def test_npm_prefix_is_what_npm_says(case, tmp_path, monkeypatch):
    env = {k: v for k, v in os.environ.items() if not k.lower().startswith("npm_config_")}
    env["HOME"] = str(tmp_path)
    if case == "env":
        env["npm_config_prefix"] = str(tmp_path / "from-env")
    if case == "npmrc":
        (tmp_path / ".npmrc").write_text(f"cafile=/dev/null\nprefix = {tmp_path / 'from-rc'}\n")
    for k in [k for k in os.environ if k.lower().startswith("npm_config_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("HOME", env["HOME"])
    if "npm_config_prefix" in env:
        monkeypatch.setenv("npm_config_prefix", env["npm_config_prefix"])
    assert nodefree.npm_prefix() == _real_prefix(env)


@pytest.mark.parametrize("registry", [None, "https://registry.example.org/"])
def test_jupyterlab_gets_what_its_yarn_call_gives(registry, monkeypatch, tmp_path):
    """The node-free yarn configuration is what JupyterLab's own call returns with its bundled
    yarn, with and without a registry set for yarn, and so is the registry JupyterLab uses."""
    import logging

    from jupyterlab import commands

    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("YARN_NPM_REGISTRY_SERVER", "YARN_REGISTRY"):
        if registry:
            monkeypatch.setenv(name, registry)
        else:
            monkeypatch.delenv(name, raising=False)
    real = commands._yarn_config(logging.getLogger("test"))
    assert nodefree.yarn_config() == real
    expected = commands.AppOptions().registry
    monkeypatch.setattr(commands, "_yarn_config", nodefree.yarn_config)
    assert commands.AppOptions().registry == expected
