"""``upgrade`` leaves Alembic alone when the database is at the head already."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from tinystack.common import db as dbmod
from tinystack.common.db import Database, at_head, current_revision, head_revisions, upgrade


def test_head_revisions_agree_with_alembic():
    config = Config()
    config.set_main_option("script_location", str(dbmod.MIGRATIONS_DIR))
    assert head_revisions() == set(ScriptDirectory.from_config(config).get_heads())


def _revision(path: Path, rev: str, down: str) -> None:
    path.write_text(f'"""r {rev}"""\n\nrevision = {rev!r}\ndown_revision = {down}\n'
                    "branch_labels = None\n")


def test_head_revisions_follow_branches_and_merges(tmp_path):
    _revision(tmp_path / "a.py", "a", "None")
    _revision(tmp_path / "b.py", "b", "'a'")
    _revision(tmp_path / "c.py", "c", "'a'")
    assert head_revisions(tmp_path) == {"b", "c"}
    _revision(tmp_path / "d.py", "d", "('b', 'c')")
    assert head_revisions(tmp_path) == {"d"}


def test_a_revision_it_cannot_read_means_ask_alembic(tmp_path):
    _revision(tmp_path / "a.py", "a", "None")
    (tmp_path / "b.py").write_text("revision = make_id()\ndown_revision = 'a'\n")
    assert head_revisions(tmp_path) is None


def test_at_head_only_once_upgraded(tmp_path, monkeypatch):
    db = Database(f"sqlite:///{tmp_path / 't.db'}")
    try:
        assert not at_head(db)
        upgrade(db)
        assert at_head(db)
        assert {current_revision(db)} == head_revisions()

        def no_alembic(*args, **kwargs):
            raise AssertionError("Alembic ran on a database already at the head")

        monkeypatch.setattr("alembic.command.upgrade", no_alembic)
        upgrade(db)  # at the head: a no-op that never reaches Alembic
    finally:
        db.dispose()
