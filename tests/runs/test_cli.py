"""`cscale-hub run` / `cscale-hub runs …` against the real service, as a script outside the hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

CLI = [str(Path(sys.executable).with_name("cscale-hub"))]


def cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        CLI + args, env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_run_wait_sweep_list_and_cancel(minihub, make_nb, tmp_path):
    token = minihub.token("erin", ["access:services!service=runs"])
    env = {"CSCALE_HUB_URL": minihub.url, "CSCALE_HUB_TOKEN": token}
    for key in ("CSCALE_RUNS_URL", "JUPYTERHUB_API_TOKEN"):
        env[key] = ""
    nb = tmp_path / "double.ipynb"
    nb.write_text(json.dumps(make_nb("print('double', x * 2, label)", params="x = 1\nlabel = ''")))

    r = cli(["run", str(nb), "-p", "x", "21", "-p", "label", "cli", "--wait"], env, tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout
    run_id = r.stdout.split()[1]
    assert "cell 3/3 succeeded" in r.stderr  # the progress bar's last state
    output = tmp_path / f"double.{run_id}.ipynb"
    assert "double 42 cli" in output.read_text()

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump([{"x": 1}, {"x": 2}, {"x": 3}]))
    r = cli(
        ["run", str(nb), "--sweep", str(sweep), "--wait", "--output-dir", str(tmp_path)],
        env,
        tmp_path,
    )
    assert r.returncode == 0, r.stderr + r.stdout
    assert "3/3 runs ended" in r.stderr
    texts = "".join(p.read_text() for p in tmp_path.glob("double.*.ipynb"))
    assert all(f"double {v}" in texts for v in (2, 4, 6, 42))

    r = cli(["runs", "list"], env, tmp_path)
    assert r.returncode == 0 and run_id in r.stdout and r.stdout.count("succeeded") == 4

    r = cli(["runs", "logs", run_id], env, tmp_path)
    assert r.returncode == 0 and "double 42 cli" in r.stdout

    r = cli(["runs", "cancel", run_id], env, tmp_path)
    assert r.returncode == 2 and "409" in r.stderr and "already ended" in r.stderr

    r = cli(["runs", "show", "nope"], {**env, "CSCALE_HUB_TOKEN": "wrong"}, tmp_path)
    assert r.returncode == 2 and "401" in r.stderr


def test_failed_run_exit_code_and_output(minihub, make_nb, tmp_path):
    env = {
        "CSCALE_HUB_URL": minihub.url,
        "CSCALE_HUB_TOKEN": minihub.token("erin"),
        "CSCALE_RUNS_URL": "",
        "JUPYTERHUB_API_TOKEN": "",
    }
    nb = tmp_path / "fails.ipynb"
    nb.write_text(json.dumps(make_nb("1/0")))
    r = cli(["run", str(nb), "--wait"], env, tmp_path)
    assert r.returncode == 1, r.stderr + r.stdout
    assert "failed ZeroDivisionError" in r.stdout
    [out] = tmp_path.glob("fails.*.ipynb")
    assert "ZeroDivisionError" in out.read_text()
