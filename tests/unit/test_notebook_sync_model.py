"""Notebook sync over any sequence of template updates, user edits, deletions, planted links
and syncs (hypothesis state machine, temporary directories, run as the current user).

What must hold after every sync, whatever happened before:

- a user's edit is never overwritten or removed (their content is still at its path);
- a file the user did not touch is the newest template;
- a file the user deleted comes back as the newest template;
- when an edited file's template changed, the new template is offered beside it
  (``<name>.new<suffix>``), so nothing is lost either way;
- a link planted where a notebook belongs is left as it is, reported as refused, and the file
  it points to is never read into the home nor written.

The fixed cases (first sync, each kind of planted link, FIFOs, the command line) are in
test_notebook_sync.py next to this file.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path, PurePosixPath

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cscale_extensions.notebooksync import sync

FILES = ["a.ipynb", "sub/b.py", "sub/deep/c.md"]
content = st.sampled_from(["v1", "v2", "v3", "mine", "mine too", ""])


def offer(rel: str) -> str:
    p = PurePosixPath(rel)
    return str(p.with_name(f"{p.stem}.new{p.suffix}"))


class SyncMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="cscale-sync-"))
        self.src, self.dst = self.root / "templates", self.root / "home" / "workflow"
        self.outside = self.root / "outside.txt"
        self.outside.write_text("precious")
        self.src.mkdir()
        self.template: dict[str, str] = {}
        #: what each path of the home must hold after the next sync: None = the template
        self.user: dict[str, str | None] = {}
        self.linked: set[str] = set()
        #: the templates at the last sync, and the template each (not linked) path was last
        #: synced with: the manifest, so writing that content back is no edit
        self.last: dict[str, str] = {}
        self.synced: dict[str, str] = {}
        self.synced_once = False

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    @rule(rel=st.sampled_from(FILES), text=content)
    def publish_template(self, rel: str, text: str) -> None:
        path = self.src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.template[rel] = text

    @precondition(lambda self: self.synced_once)
    @rule(rel=st.sampled_from(FILES), text=content)
    def user_edits(self, rel: str, text: str) -> None:
        path = self.dst / rel
        if rel in self.linked or not path.is_file():
            return
        path.write_text(text)
        # an "edit" back to what the sync wrote is no edit: the template may replace it
        self.user[rel] = text if text != self.synced.get(rel) else None

    @precondition(lambda self: self.synced_once)
    @rule(rel=st.sampled_from(FILES))
    def user_deletes(self, rel: str) -> None:
        path = self.dst / rel
        if path.is_symlink() or path.is_file():
            path.unlink()
            self.linked.discard(rel)
            self.user.pop(rel, None)

    @precondition(lambda self: self.synced_once)
    @rule(rel=st.sampled_from(FILES))
    def user_plants_a_link(self, rel: str) -> None:
        path = self.dst / rel
        if not path.parent.is_dir() or path.is_symlink():
            return
        if path.exists():
            path.unlink()
        path.symlink_to(self.outside)
        self.linked.add(rel)
        self.user.pop(rel, None)

    @rule()
    def sync_now(self) -> None:
        offers_before = {r: self._read(offer(r)) for r in FILES}
        changed = {r for r in self.template if self.template[r] != self.last.get(r)}
        report = sync(self.src, self.dst)
        assert set(report.refused) == {r for r in self.linked if r in self.template}
        for rel, text in self.template.items():
            if rel in self.linked:
                assert (self.dst / rel).is_symlink()
                continue
            mine = self.user.get(rel)
            got = (self.dst / rel).read_text()
            if mine is None:
                assert got == text, f"{rel}: not the newest template"
            else:
                assert got == mine, f"{rel}: the user's edit was overwritten"
                if rel in changed and mine != text:
                    assert self._read(offer(rel)) == text, f"{rel}: new template not offered"
                elif rel not in changed:
                    assert self._read(offer(rel)) == offers_before[rel]  # offers not rewritten
        self.synced = {r: t for r, t in self.template.items() if r not in self.linked}
        for rel in list(self.user):
            if self.user[rel] == self.template.get(rel):
                self.user[rel] = None  # the same content as the template: no longer an edit
        self.last = dict(self.template)
        self.synced_once = True

    def _read(self, rel: str) -> str | None:
        path = self.dst / rel
        return path.read_text() if path.is_file() and not path.is_symlink() else None

    @invariant()
    def the_outside_file_is_never_touched(self) -> None:
        assert self.outside.read_text() == "precious"


SyncMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=25, deadline=None)
test_sync_never_clobbers_and_never_follows_links = SyncMachine.TestCase
