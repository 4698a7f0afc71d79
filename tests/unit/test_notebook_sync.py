"""Copying workflow notebooks into homes never clobbers a user's edit."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from cscale_extensions.notebooksync import MANIFEST, SyncRefused, main, sync


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*") if p.is_file()
            and not p.name.startswith(".cscale-sync")}


def test_first_sync_copies_everything(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "home" / "wf"
    (src / "sub").mkdir(parents=True)
    (src / "a.ipynb").write_text("A1")
    (src / "sub" / "b.py").write_text("B1")
    (src / ".ipynb_checkpoints").mkdir()
    (src / ".ipynb_checkpoints" / "a-checkpoint.ipynb").write_text("x")
    report = sync(src, dst)
    assert sorted(report.created) == ["a.ipynb", "sub/b.py"]
    assert _tree(dst) == {"a.ipynb": "A1", "sub/b.py": "B1"}


def test_updates_reach_untouched_files_but_never_edited_ones(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "wf"
    src.mkdir()
    (src / "a.ipynb").write_text("A1")
    (src / "b.ipynb").write_text("B1")
    sync(src, dst)
    (dst / "b.ipynb").write_text("my edit")  # the user changes b
    (src / "a.ipynb").write_text("A2")
    (src / "b.ipynb").write_text("B2")
    report = sync(src, dst)
    assert report.updated == ["a.ipynb"] and report.kept == ["b.ipynb"]
    assert (dst / "a.ipynb").read_text() == "A2"
    assert (dst / "b.ipynb").read_text() == "my edit"
    assert (dst / "b.new.ipynb").read_text() == "B2"  # the new template is offered beside it
    # later syncs keep the edit and do not rewrite the offer
    (dst / "b.new.ipynb").write_text("user looked at it")
    report = sync(src, dst)
    assert report.kept == ["b.ipynb"] and (dst / "b.ipynb").read_text() == "my edit"
    assert (dst / "b.new.ipynb").read_text() == "user looked at it"


def test_deleted_files_are_restored_and_new_ones_appear(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "wf"
    src.mkdir()
    (src / "a.ipynb").write_text("A1")
    sync(src, dst)
    (dst / "a.ipynb").unlink()
    (src / "c.ipynb").write_text("C1")
    report = sync(src, dst)
    assert sorted(report.created) == ["a.ipynb", "c.ipynb"]


def test_missing_source_is_a_no_op(tmp_path):
    assert sync(tmp_path / "nope", tmp_path / "wf").created == []


# --------------------------------------------------------------------------- planted links
# The target is the user's: whatever they put there, a sync never reads or writes through a
# link (it runs as the user anyway; this is the second line of defence).


def _synced(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "wf"
    (src / "sub").mkdir(parents=True)
    (src / "a.ipynb").write_text("A1")
    (src / "sub" / "b.py").write_text("B1")
    sync(src, dst)
    return src, dst


def test_manifest_link_is_not_read_and_is_replaced(tmp_path):
    src, dst = _synced(tmp_path)
    outside = tmp_path / "outside.json"
    outside.write_text('{"secret": "s3cr3t"}')
    (dst / MANIFEST).unlink()
    (dst / MANIFEST).symlink_to(outside)
    report = sync(src, dst)
    assert MANIFEST in report.refused
    assert outside.read_text() == '{"secret": "s3cr3t"}'
    assert not (dst / MANIFEST).is_symlink() and "s3cr3t" not in (dst / MANIFEST).read_text()


def test_manifest_tmp_link_is_not_written_through(tmp_path):
    src, dst = _synced(tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    for name in (MANIFEST + ".tmp", f".{MANIFEST}.cscale-tmp", ".a.ipynb.cscale-tmp"):
        (dst / name).symlink_to(outside)
    (dst / "a.ipynb").unlink()
    sync(src, dst)
    assert outside.read_text() == "precious"
    assert (dst / "a.ipynb").read_text() == "A1" and not (dst / "a.ipynb").is_symlink()


def test_linked_notebook_or_subdir_is_left_alone(tmp_path):
    src, dst = _synced(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "sub").mkdir(parents=True)
    (elsewhere / "a.ipynb").write_text("not yours")
    (dst / "a.ipynb").unlink()
    (dst / "a.ipynb").symlink_to(elsewhere / "a.ipynb")
    shutil.rmtree(dst / "sub")
    (dst / "sub").symlink_to(elsewhere / "sub")
    (src / "a.ipynb").write_text("A2")
    report = sync(src, dst)
    assert sorted(report.refused) == ["a.ipynb", "sub/b.py"]
    assert (elsewhere / "a.ipynb").read_text() == "not yours"
    assert list((elsewhere / "sub").iterdir()) == []


def test_fifo_manifest_does_not_hang(tmp_path):
    src, dst = _synced(tmp_path)
    (dst / MANIFEST).unlink()
    os.mkfifo(dst / MANIFEST)
    report = sync(src, dst)
    assert MANIFEST in report.refused and (dst / MANIFEST).is_file()


def test_linked_target_is_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.ipynb").write_text("A1")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "wf").symlink_to(elsewhere)
    with pytest.raises(SyncRefused):
        sync(src, tmp_path / "wf")
    assert list(elsewhere.iterdir()) == []


def test_command_line_prints_a_json_report(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.ipynb").write_text("A1")
    assert main([str(src), str(tmp_path / "wf")]) == 0
    assert json.loads(capsys.readouterr().out)["created"] == ["a.ipynb"]
    (tmp_path / "wf2").symlink_to(tmp_path / "src")
    assert main([str(src), str(tmp_path / "wf2")]) == 1
    assert "symbolic link" in json.loads(capsys.readouterr().out)["error"]
