"""Symlink resolution inside an image root, DirView, and user/group lookups."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.engine.pathresolve import (DirView, PathResolveError, glob_view, normalize,
                                        resolve_in_root)
from builder.engine.userdb import UserLookupError, resolve_chown, resolve_user


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    (r / "srv/data").mkdir(parents=True)
    (r / "etc").mkdir()
    (r / "srv/data/file").write_text("x")
    os.symlink("/srv", r / "app")                       # absolute: relative to the image root
    os.symlink("../../../../../../etc", r / "srv/up")   # climbs: must stop at /
    os.symlink("data/file", r / "srv/rel")
    os.symlink("loop2", r / "loop1")
    os.symlink("loop1", r / "loop2")
    os.symlink(str(tmp_path), r / "host")               # absolute host path: still inside root
    return r


def test_normalize() -> None:
    assert normalize("a/../../b/./c/") == "/b/c"
    assert normalize("/") == "/"
    assert normalize("") == "/"


def test_absolute_link_is_relative_to_root(root: Path) -> None:
    v = DirView(root)
    assert resolve_in_root(v, "/app/data/file") == "/srv/data/file"
    assert resolve_in_root(v, "/app") == "/srv"
    assert resolve_in_root(v, "/app", follow_last=False) == "/app"
    assert resolve_in_root(v, "/app/rel") == "/srv/data/file"


def test_dotdot_never_leaves_root(root: Path) -> None:
    v = DirView(root)
    assert resolve_in_root(v, "/srv/up") == "/etc"
    assert resolve_in_root(v, "/srv/up/passwd") == "/etc/passwd"
    assert resolve_in_root(v, "/../../../etc") == "/etc"
    # a link holding a host path resolves to that path *inside* the root (which is missing)
    assert resolve_in_root(v, "/host/rootfs") == str(Path("/") / str(root.parent).lstrip("/") / "rootfs")
    assert v.lstat(resolve_in_root(v, "/host")) is None


def test_missing_components_are_kept(root: Path) -> None:
    assert resolve_in_root(DirView(root), "/app/new/dir") == "/srv/new/dir"


def test_symlink_loop_is_an_error(root: Path) -> None:
    with pytest.raises(PathResolveError, match="too many levels"):
        resolve_in_root(DirView(root), "/loop1/x")


def test_dirview_refuses_host_symlink_components(root: Path) -> None:
    v = DirView(root)
    assert v.lstat("/srv/data/file") is not None
    with pytest.raises(PathResolveError):
        v.lstat("/host/rootfs/etc")  # would leave the root through a host symlink
    with v.open("/srv/data/file") as f:
        assert f.read() == b"x"
    assert v.listdir("/srv") == ["data", "rel", "up"]
    assert v.host_path("/srv/data/file") == root / "srv/data/file"


def test_glob_view(root: Path) -> None:
    v = DirView(root)
    assert glob_view(v, "/srv/*") == ["/srv/data", "/srv/rel", "/srv/up"]
    assert glob_view(v, "/app/d?ta/f*") == ["/app/data/file"]
    assert glob_view(v, "/srv/[r-u]*") == ["/srv/rel", "/srv/up"]
    assert glob_view(v, "/nothing*") == []
    assert glob_view(v, "/srv/data/file") == ["/srv/data/file"]
    assert glob_view(v, "/srv/missing") == []


# ---- user database ------------------------------------------------------------------------

PASSWD = """root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1::/:/sbin/nologin
app:x:1000:1001:App:/home/app:/bin/sh
broken line
"""
GROUP = """root:x:0:
wheel:x:10:root,app
staff:x:50:app
appgrp:x:1001:
"""


@pytest.fixture()
def image(tmp_path: Path) -> DirView:
    r = tmp_path / "img"
    (r / "real-etc").mkdir(parents=True)
    (r / "real-etc/passwd").write_text(PASSWD)
    (r / "real-etc/group").write_text(GROUP)
    os.symlink("/real-etc", r / "etc")  # lookups resolve symlinks inside the image
    return DirView(r)


def test_resolve_chown(image: DirView) -> None:
    assert resolve_chown("app", image) == (1000, 1001)
    assert resolve_chown("app:staff", image) == (1000, 50)
    assert resolve_chown("app:7", image) == (1000, 7)
    assert resolve_chown("1000", image) == (1000, 1000)   # BuildKit: numeric uid -> gid = uid
    assert resolve_chown("4242", image) == (4242, 4242)
    assert resolve_chown("5:wheel", image) == (5, 10)


def test_resolve_chown_unknown_names_fall_back_to_id_0(image: DirView) -> None:
    """BuildKit's file op (solver/llbsolver/ops/user_linux.go readUser): a name missing from
    passwd/group leaves the id at its default: 0 for the user part, the user's gid for the
    group part. Only a negative id is refused."""
    assert resolve_chown("nobody", image) == (0, 0)
    assert resolve_chown("nobody:nogroup", image) == (0, 0)
    assert resolve_chown(":", image) == (0, 0)
    assert resolve_chown(":staff", image) == (0, 50)
    assert resolve_chown("app:nogroup", image) == (1000, 1001)
    assert resolve_chown("app:", image) == (1000, 1001)
    assert resolve_chown("root:root", image) == (0, 0)
    assert resolve_chown("99999999999", image) == (0, 0)   # not an int32: a name, not found
    with pytest.raises(UserLookupError, match="cannot be negative"):
        resolve_chown("-1", image)


def test_resolve_chown_without_passwd(tmp_path: Path) -> None:
    empty = DirView(tmp_path)
    assert resolve_chown("33:33", empty) == (33, 33)
    assert resolve_chown("www-data", empty) == (0, 0)
    assert resolve_chown("7:www-data", empty) == (7, 7)


def test_resolve_user(image: DirView) -> None:
    assert resolve_user("app", image) == (1000, 1001, (10, 50))
    assert resolve_user("1000", image) == (1000, 1001, (10, 50))   # numeric found in passwd
    assert resolve_user("4242", image) == (4242, 0, ())            # numeric, unknown: gid 0
    assert resolve_user("app:staff", image) == (1000, 50, ())      # explicit group: no extras
    assert resolve_user("root", image) == (0, 0, (10,))
    assert resolve_user("", image) == (0, 0, (10,))                 # BuildKit looks up "0"
    assert resolve_user("1000:7", image) == (1000, 7, ())           # uid:gid: no lookup at all
    assert resolve_user(":", image) == (0, 0, (10,))                # runc: empty parts are defaults
    assert resolve_user(":staff", image) == (0, 50, ())
    with pytest.raises(UserLookupError, match="unable to find user ghost"):
        resolve_user("ghost", image)


def test_resolve_user_without_passwd(tmp_path: Path) -> None:
    """BuildKit's GetUser on an image with no /etc/passwd (FROM scratch): no USER and numeric
    users need no lookup; only a name does."""
    empty = DirView(tmp_path)
    assert resolve_user("", empty) == (0, 0, ())
    assert resolve_user("0", empty) == (0, 0, ())
    assert resolve_user("1000", empty) == (1000, 0, ())
    assert resolve_user("1000:1000", empty) == (1000, 1000, ())
    assert resolve_user("root:root", empty) == (0, 0, ())
    with pytest.raises(UserLookupError, match="unable to find user root"):
        resolve_user("root", empty)
