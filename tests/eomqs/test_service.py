"""EO-MQS as a process: the hub-service command of ``service_spec`` under /services/eo-mqs/,
its persisted token secret across a real restart, and the ``cscale-hub eomqs`` parser."""

from __future__ import annotations

import argparse
import os
import random
import subprocess
from pathlib import Path

import requests
import yaml
from sitekit import TestSite, make_item, serve

from cscale_extensions.net import free_port, http_ready, wait_for
from cscale_extensions.services.eomqs.service import add_eomqs_parser, service_spec

REPO = Path(__file__).resolve().parents[2]


def _start(spec: dict, env: dict[str, str], log: Path) -> subprocess.Popen:
    out = open(log, "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        spec["command"],
        env={**os.environ, **spec["environment"], **env},
        cwd=REPO,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    out.close()
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def test_hub_service_command_serves_under_its_prefix_and_tokens_survive_restart(
    tmp_path, monkeypatch
):
    rng = random.Random(5)
    site = TestSite([make_item("c1", n, rng) for n in range(9)])
    with serve(site.app) as s:
        cfg_path = tmp_path / "config.yaml"
        data_dir = tmp_path / "data"
        cfg_path.write_text(
            yaml.safe_dump(
                {
                    "platform": {"data_dir": str(data_dir)},
                    "federation": {
                        "embedded_sites": False,
                        "sites": [{"name": "one", "url": s.url}],
                    },
                    "eomqs": {"log_level": "WARNING"},
                }
            )
        )
        monkeypatch.setenv("CSCALE_HUB_CONFIG", str(cfg_path))
        port = free_port()
        spec = service_spec({}, port)
        assert spec["name"] == "eo-mqs" and spec["url"] == f"http://127.0.0.1:{port}"
        assert spec["command"][1:3] == ["-m", "cscale_extensions.services.eomqs"]
        assert spec["environment"]["CSCALE_HUB_CONFIG"] == str(cfg_path)
        env = {"JUPYTERHUB_SERVICE_PREFIX": "/services/eo-mqs/"}
        base = f"http://127.0.0.1:{port}/services/eo-mqs/"
        proc = _start(spec, env, tmp_path / "eomqs.log")
        try:
            assert wait_for(lambda: http_ready(base) or proc.poll() is not None, 60), (
                "EO-MQS did not start"
            )
            assert proc.poll() is None, (tmp_path / "eomqs.log").read_text()
            landing = requests.get(base, timeout=30).json()
            assert {ln["rel"] for ln in landing["links"]} >= {
                "self",
                "root",
                "conformance",
                "data",
                "search",
                "service-desc",
                "service-doc",
            }
            assert all(ln["href"].startswith(base) for ln in landing["links"])
            doc = requests.get(base + "search", params={"limit": 4}, timeout=30).json()
            nxt = [ln for ln in doc["links"] if ln["rel"] == "next"][0]["href"]
            second = requests.get(nxt, timeout=30).json()["features"]
        finally:
            _stop(proc)
        secret = data_dir / "secrets" / "eomqs_token_secret"
        assert secret.is_file() and oct(secret.stat().st_mode & 0o777) == "0o600"
        proc = _start(spec, env, tmp_path / "eomqs.log")
        try:
            assert wait_for(lambda: http_ready(base) or proc.poll() is not None, 60)
            r = requests.get(nxt, timeout=30)
            assert r.status_code == 200, r.text
            assert [f["id"] for f in r.json()["features"]] == [f["id"] for f in second]
        finally:
            _stop(proc)


def test_cli_parser_registers_eomqs():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_eomqs_parser(sub)
    args = parser.parse_args(["eomqs", "--config", "x.yaml", "--port", "9999"])
    assert (args.config, args.port, args.ip) == ("x.yaml", 9999, "127.0.0.1")
    assert callable(args.func)


def test_bad_config_file_is_a_clear_error(tmp_path):
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("eomqs: {max_limit: -3}\n")
    r = subprocess.run(
        [sys.executable, "-m", "cscale_extensions.services.eomqs", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert r.returncode == 2
    assert "eomqs.max_limit" in r.stderr and "Traceback" not in r.stderr
