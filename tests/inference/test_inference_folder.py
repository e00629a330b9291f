"""ImageFolder: one sub-folder per class, images found recursively, clear one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlx_inception.data.folder import ImageFolder, find_images
from mlx_inception.errors import DataError


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")  # only names matter for the index; decoding happens later
    return path


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "data"
    touch(root / "dog" / "a.jpg")
    touch(root / "dog" / "puppies" / "b.PNG")  # nested, upper-case ending
    touch(root / "cat" / "c.webp")
    touch(root / "cat" / "notes.txt")  # not an image ending
    touch(root / "cat" / "._c.webp")  # macOS resource fork
    touch(root / "cat" / ".hidden" / "d.jpg")  # hidden folder
    (root / ".git").mkdir()  # hidden folder at class level
    return root


def test_classes_are_sorted_folder_names_and_samples_are_found_recursively(tree):
    folder = ImageFolder(tree)
    assert folder.root == tree
    assert folder.classes == ["cat", "dog"]
    assert folder.class_to_index == {"cat": 0, "dog": 1}
    assert folder.samples == [
        (tree / "cat" / "c.webp", 0),
        (tree / "dog" / "a.jpg", 1),
        (tree / "dog" / "puppies" / "b.PNG", 1),
    ]
    assert len(folder) == 3 and folder[0] == folder.samples[0]
    assert folder.targets == [0, 1, 1]


def test_a_given_class_mapping_is_used(tree):
    folder = ImageFolder(tree, class_to_index={"cat": 281, "dog": 207, "fox": 277})
    assert [index for _, index in folder.samples] == [281, 207, 207]


def test_a_class_folder_missing_from_the_mapping_is_named(tree):
    with pytest.raises(DataError, match="1 class folder.* not in the class mapping: dog"):
        ImageFolder(tree, class_to_index={"cat": 0})


def test_missing_root_is_refused(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        ImageFolder(tmp_path / "nowhere")


def test_a_file_as_root_is_refused(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        ImageFolder(touch(tmp_path / "a.jpg"))


def test_no_class_folders_is_refused_and_loose_images_are_mentioned(tmp_path):
    touch(tmp_path / "a.jpg")
    with pytest.raises(DataError, match=r"no class folders \(1 images lie directly in it\)") as e:
        ImageFolder(tmp_path)
    assert "\n" not in str(e.value)


def test_an_empty_class_folder_is_named(tree):
    (tree / "fox").mkdir()
    with pytest.raises(DataError, match="class folder 'fox' has no image files"):
        ImageFolder(tree)


def test_a_single_class_is_refused_unless_the_caller_allows_it(tmp_path):
    touch(tmp_path / "only" / "a.jpg")
    with pytest.raises(DataError, match=r"found 1 class folder\(s\) \(only\); at least 2"):
        ImageFolder(tmp_path)
    assert ImageFolder(tmp_path, min_classes=1).classes == ["only"]


def test_symlink_loops_are_visited_once(tmp_path):
    touch(tmp_path / "cls" / "a.jpg")
    (tmp_path / "cls" / "loop").symlink_to(tmp_path / "cls")
    assert find_images(tmp_path / "cls") == [tmp_path / "cls" / "a.jpg"]
