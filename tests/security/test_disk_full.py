"""A disk that really fills up: a small tmpfs mounted over part of a user's home.

On a real JupyterHub with the runs service (cscale_testing.testhub.MiniHub; user
servers use the platform's Jupyter Server settings, so its contents manager), as root.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
import requests
from cscale_testing.testhub import CHP, MiniHub, Runs, notebook
from faultkit import fill, free_bytes, small_disk

from cscale_extensions.net import wait_for

pytestmark = pytest.mark.slow
rel = pytest.mark.reliability
PAGE = os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    if not CHP.exists():
        pytest.skip("configurable-http-proxy is not installed (npm install)")
    mini = MiniHub(tmp_path_factory.mktemp("diskfull-hub"))
    try:
        mini.start()
        yield mini
    finally:
        mini.stop()


def _big_picture_cell(nbytes: int) -> str:
    """A cell whose output (an image only, so nothing goes to the log) is ``nbytes`` large."""
    return (
        "import base64, os\n"
        "from IPython.display import display\n"
        f"display({{'image/png': base64.b64encode(os.urandom({nbytes})).decode()}}, raw=True)"
    )


@rel(
    injected="the disk of a user's runs directory (2 MB tmpfs) fills up while a run saves "
    "its output notebook",
    expected="run failed with 'the disk is full' message; output notebook intact with the "
    "cells saved before; earlier runs' outputs kept; next run succeeds once space is free",
)
def test_run_on_a_full_disk_fails_clearly_and_keeps_its_output(hub):
    runs_dir = hub.dir / "homes" / "erin" / "runs"
    with small_disk(runs_dir, "2m"):
        erin = Runs(hub.runs_url, hub.token("erin"))
        before = erin.ok("POST", "runs", json={"notebook": notebook("print('an earlier run')")})
        assert erin.wait(before["id"])["state"] == "succeeded"

        nb = notebook("print('kept: first cell')", _big_picture_cell(3_000_000))
        run = erin.wait(erin.ok("POST", "runs", json={"notebook": nb})["id"])
        assert run["state"] == "failed", run
        assert "the disk is full" in run["message"], run["message"]
        assert "Traceback" not in run["message"]
        # the output notebook is the last complete save: a valid notebook with the first cell
        saved = runs_dir / run["id"] / "output.ipynb"
        out = nbformat.reads(saved.read_text(), as_version=4)
        assert "kept: first cell" in json.dumps(out.cells[1].outputs)
        served = erin.ok("GET", f"runs/{run['id']}/output")
        assert "kept: first cell" in json.dumps(served)
        assert not [p for p in (runs_dir / run["id"]).iterdir() if p.name.endswith(".tmp")]
        # nothing else was lost
        assert "an earlier run" in json.dumps(erin.ok("GET", f"runs/{before['id']}/output"))
        # the failed save left no debris: the next run has room and succeeds
        after = erin.ok("POST", "runs", json={"notebook": notebook("print('room again')")})
        assert erin.wait(after["id"])["state"] == "succeeded"


def _server(hub: MiniHub, user: str) -> tuple[str, requests.Session]:
    hub.admin("POST", f"/users/{user}/server")
    assert wait_for(
        lambda: (hub.admin("GET", f"/users/{user}").json()["servers"].get("") or {}).get("ready"),
        120,
        0.5,
    ), f"the server of {user} did not start"
    s = requests.Session()
    s.headers["Authorization"] = f"token {hub.token(user)}"
    return f"{hub.url}user/{user}/api/contents/", s


def _put(s: requests.Session, url: str, model: dict) -> requests.Response:
    return s.put(url, json=model, timeout=60)


def _text(content: str) -> dict:
    return {"type": "file", "format": "text", "content": content}


def _nb(source: str) -> dict:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source)]
    return {"type": "notebook", "format": "json", "content": json.loads(nbformat.writes(nb))}


@rel(
    injected="the disk of a user's folder (1 MB tmpfs) is full to the last page when a "
    "larger version of a text file and of a notebook is saved (Jupyter contents API)",
    expected="507 naming the full disk, no traceback; the previously saved versions intact, "
    "no leftover temporary files; saving works again once space is freed",
)
def test_saving_on_a_full_disk_keeps_the_saved_version(hub):
    api, s = _server(hub, "dave")
    folder = hub.dir / "homes" / "dave" / "scratch"
    with small_disk(folder, "1m"):
        old_text = "old line\n" * 333  # 2997 bytes: one page
        old_nb = _nb("x = 'old'")
        assert _put(s, api + "scratch/notes.txt", _text(old_text)).status_code in (200, 201)
        assert _put(s, api + "scratch/analysis.ipynb", old_nb).status_code in (200, 201)
        filler = fill(folder, leave=PAGE)  # room for exactly one more page

        for name, new, read in [
            ("notes.txt", _text("new line\n" * 700), lambda m: m["content"] == old_text),
            (
                "analysis.ipynb",
                _nb("x = 'new'\n" + "# padding\n" * 700),
                lambda m: m["content"]["cells"][0]["source"] == "x = 'old'",
            ),
        ]:
            r = _put(s, api + "scratch/" + name, new)
            assert r.status_code == 507, (name, r.status_code, r.text)
            assert "Traceback" not in r.text
            msg = r.json()["message"]
            assert "no space left" in msg and "unchanged" in msg, msg
            got = s.get(api + "scratch/" + name, timeout=30)
            assert got.status_code == 200 and read(got.json()), f"{name} damaged: {got.text[:300]}"
        files = sorted(p.name for p in folder.iterdir() if p.name != ".ipynb_checkpoints")
        assert files == ["analysis.ipynb", "filler.bin", "notes.txt"], files  # no temporaries
        assert free_bytes(folder) == PAGE

        filler.unlink()
        assert _put(s, api + "scratch/notes.txt", _text("saved at last\n")).status_code == 200
        assert s.get(api + "scratch/notes.txt", timeout=30).json()["content"] == "saved at last\n"
    hub.admin("DELETE", "/users/dave/server")
    assert not Path(folder, "notes.txt").exists()  # the tmpfs is gone with the test
