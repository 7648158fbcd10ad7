"""Staged files left by a watcher killed between stage and commit are removed at start (issue 10),
and nothing else is."""

from __future__ import annotations

from pathlib import Path

from lbgen.adapters.files import LocalFiles
from lbgen.core.settings import Target


def test_only_stale_staged_files_of_the_target_are_removed(tmp_path: Path) -> None:
    target = Target(name="lb", template="t.j2", dest=str(tmp_path / "nginx.conf"))
    files = LocalFiles()
    staged = files.stage(target, "left behind")  # as a watcher killed before commit leaves it
    kept = [".nginx.conf.lkg", "nginx.conf", ".haproxy.cfg.abcd1234.lbgen", ".nginx.conf.abcd1234.lbgen.bak",
            ".nginx.conf.x.abcd1234.lbgen", "nginx.conf.abcd1234.lbgen", ".nginx.conf.ABCD1234.lbgen"]
    for name in kept:
        (tmp_path / name).write_text("not ours")
    assert files.remove_stale(target) == [staged]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


def test_a_missing_directory_has_nothing_stale(tmp_path: Path) -> None:
    target = Target(name="lb", template="t.j2", dest=str(tmp_path / "absent" / "nginx.conf"))
    assert LocalFiles().remove_stale(target) == []
