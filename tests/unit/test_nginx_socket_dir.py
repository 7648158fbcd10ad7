"""The control socket's directory stays private to lbgen's user (issue 12): nginx makes the socket
itself mode 0666, so the directory is what keeps other local users off the control API."""

import os
from pathlib import Path

import pytest

from lbgen.adapters.kinds.nginx.socket_dir import check_private, make_directory, socket_directory
from lbgen.core.settings import Target
from lbgen.errors import ApplyError


def target(tmp_path: Path) -> Target:
    return Target(name="nginx", template="t.j2", dest=str(tmp_path / "nginx.conf"), kind="nginx", runtime=True,
                  vars={"pid": str(tmp_path / "nginx.pid")})


def test_the_directory_is_made_private_beside_the_pid_file(tmp_path: Path) -> None:
    make_directory(target(tmp_path))
    directory = tmp_path / "lbgen-nginx"
    assert socket_directory(target(tmp_path)) == directory
    assert directory.is_dir() and directory.stat().st_mode & 0o777 == 0o700
    make_directory(target(tmp_path))  # again: it is there, and private
    check_private(target(tmp_path))


def test_an_existing_directory_is_left_as_it_is_and_judged_before_use(tmp_path: Path) -> None:
    (tmp_path / "lbgen-nginx").mkdir(mode=0o755)
    (tmp_path / "lbgen-nginx").chmod(0o755)
    make_directory(target(tmp_path))
    assert (tmp_path / "lbgen-nginx").stat().st_mode & 0o777 == 0o755
    with pytest.raises(ApplyError, match="is open to other users"):
        check_private(target(tmp_path))


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701, 0o777])
def test_a_directory_others_may_enter_is_refused(tmp_path: Path, mode: int) -> None:
    (tmp_path / "lbgen-nginx").mkdir()
    (tmp_path / "lbgen-nginx").chmod(mode)
    with pytest.raises(ApplyError, match=f"is open to other users .*mode {mode:04o}"):
        check_private(target(tmp_path))


def test_a_link_in_its_place_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / "lbgen-nginx").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ApplyError, match="is not a directory"):
        check_private(target(tmp_path))


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory away needs root")
def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    (tmp_path / "lbgen-nginx").mkdir(mode=0o700)
    os.chown(tmp_path / "lbgen-nginx", 65534, 65534)
    with pytest.raises(ApplyError, match="owner uid 65534"):
        check_private(target(tmp_path))


def test_a_missing_directory_is_an_error_for_the_runtime_path(tmp_path: Path) -> None:
    with pytest.raises(ApplyError, match="control socket directory"):
        check_private(target(tmp_path))
