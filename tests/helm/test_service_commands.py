"""Our Deployments' commands really start the services (as local processes, not in pods).

EO-MQS is started with the command line, environment and settings the chart renders (the
settings' two in-pod paths — data dir and token-secret file — moved to a temp dir, and the
listen address moved from 0.0.0.0 to 127.0.0.1), and must answer its readiness probe path. The
runs service needs a hub; here we only check that it accepts the chart's arguments and stops
with its own "start it as a hub service" message.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import yaml

from cscale_extensions.net import free_port, http_ready, wait_for

REPO = Path(__file__).resolve().parents[2]


def test_eomqs_starts_from_the_rendered_deployment(render, obj, tmp_path):
    objs = render()
    pod = obj(objs, "Deployment", "cscale-eo-mqs")["spec"]["template"]["spec"]
    (box,) = pod["containers"]
    cfg = yaml.safe_load(obj(objs, "ConfigMap", "cscale-settings")["data"]["config.yaml"])
    token = next(v for v in pod["volumes"] if v["name"] == "token")
    assert cfg["eomqs"]["token_secret_file"].endswith(token["secret"]["items"][0]["path"])
    cfg["eomqs"]["token_secret_file"] = str(tmp_path / "eomqs_token_secret")
    (tmp_path / "eomqs_token_secret").write_text("a-secret-of-enough-length-for-hmac")
    cfg["platform"]["data_dir"] = str(tmp_path / "data")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))

    port = free_port()
    argv = list(box["command"])
    argv[argv.index("--config") + 1] = str(tmp_path / "config.yaml")
    argv[argv.index("--port") + 1] = str(port)
    argv[argv.index("--ip") + 1] = "127.0.0.1"
    assert argv[:3] == ["python", "-m", "cscale_extensions.services.eomqs"]
    env = {e["name"]: e["value"] for e in box["env"] if "value" in e}
    env["CSCALE_HUB_CONFIG"] = str(tmp_path / "config.yaml")
    env["JUPYTERHUB_API_TOKEN"] = "not-checked-by-the-probe"
    proc = subprocess.Popen(
        [sys.executable, *argv[1:]],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        probe = box["readinessProbe"]["httpGet"]["path"]
        url = f"http://127.0.0.1:{port}{probe}"
        assert wait_for(lambda: http_ready(url) or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        response = httpx.get(url, timeout=10)
        assert response.status_code == 200
        assert "conformsTo" in response.json()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_runs_accepts_the_rendered_arguments(render, obj):
    box = obj(render(), "Deployment", "cscale-runs")["spec"]["template"]["spec"]["containers"][0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    env.update(
        {
            e["name"]: e["value"]
            for e in box["env"]
            if "value" in e and e["name"] != "JUPYTERHUB_API_URL"
        }
    )
    result = subprocess.run(
        [sys.executable, *box["command"][1:], *box["args"]],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "not set (start it as a hub service)" in result.stderr
    assert "usage:" not in result.stderr, "an argument of the chart was rejected"
