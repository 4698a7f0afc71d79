"""Copying workflow notebooks into homes never clobbers a user's edit."""

from __future__ import annotations

from cscale_extensions.notebook_sync import sync


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
