"""Atomic writes: the old file survives any failure, and nothing temporary is left behind."""

from __future__ import annotations

import os
import stat

import mlx.core as mx
import pytest

from mlx_inception import atomic
from mlx_inception.atomic import (
    check_destination,
    make_staging_dir,
    write_atomically,
    write_text_atomically,
)
from mlx_inception.checkpoints import store
from mlx_inception.errors import InceptionError
from mlx_inception.model import InceptionV3Config


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


def test_a_staging_folder_gets_the_usual_permissions_not_owner_only(tmp_path, monkeypatch):
    # tempfile.mkdtemp makes 0o700 folders; renamed into a shared weights folder or Hugging
    # Face cache, that would lock every other user out. The umask is fixed at 022 here.
    monkeypatch.setattr(atomic, "_UMASK", 0o022)
    folder = make_staging_dir(tmp_path / "new", prefix=".weights-")
    assert folder.parent == tmp_path / "new" and folder.name.startswith(".weights-")
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o755


def test_a_weights_directory_is_readable_by_other_users(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_UMASK", 0o022)
    out = store.save_weights(tmp_path / "weights", {"fc.bias": mx.zeros((3,))},
                             InceptionV3Config(num_classes=3, aux_logits=False))
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(out / "config.json").st_mode) == 0o644


def test_a_file_in_the_way_is_named_as_such(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(InceptionError) as error:
        check_destination(tmp_path / "afile" / "sub" / "x.npz")
    assert str(error.value) == (f"cannot write {tmp_path}/afile/sub/x.npz: {tmp_path}/afile is "
                                "a file, not a folder")


def test_checking_a_destination_creates_nothing(tmp_path):
    assert check_destination(tmp_path / "new" / "deeper" / "x.npz") == (
        tmp_path / "new" / "deeper" / "x.npz")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_a_folder_that_takes_no_files_is_refused_naming_the_path_asked_for():
    # /proc refuses new files even to root, for whom permission bits are no obstacle.
    with pytest.raises(InceptionError, match=r"^cannot write /proc/x\.npz: cannot create files "
                       r"in /proc \("):
        check_destination("/proc/x.npz")


def test_a_failed_write_names_the_destination_not_a_temporary_file(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(InceptionError) as error:
        write_text_atomically(tmp_path / "afile" / "x.json", "{}")
    assert str(error.value) == (f"cannot write {tmp_path}/afile/x.json: {tmp_path}/afile is a "
                                "file, not a folder")
