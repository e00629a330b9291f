"""Atomic writes: the old file survives any failure, and nothing temporary is left behind."""

from __future__ import annotations

import os
import stat

import pytest

from mlx_inception.atomic import write_atomically, write_text_atomically


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "stats.npz"
    path.write_text("old")

    def half_then_fail(temporary):
        temporary.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["stats.npz"]


def test_the_writer_sees_the_final_suffix_and_the_file_gets_normal_permissions(tmp_path):
    seen = []
    write_atomically(tmp_path / "sub" / "out.png", lambda t: (seen.append(t.suffix),
                                                              t.write_bytes(b"x")))
    assert seen == [".png"]
    mode = stat.S_IMODE(os.stat(tmp_path / "sub" / "out.png").st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_text_is_replaced_whole(tmp_path):
    path = write_text_atomically(tmp_path / "refs" / "main", "abc123")
    write_text_atomically(path, "def456")
    assert path.read_text() == "def456"
