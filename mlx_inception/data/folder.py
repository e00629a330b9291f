"""A folder of labelled images: one sub-folder per class, images anywhere below it."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .images import IMAGE_EXTENSIONS, is_image_file


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def link_problem(link: Path, class_folder: str, root: str) -> str | None:
    """Return why the symbolic link ``link`` in a class folder must not be followed, or None.

    ``class_folder`` and ``root`` are real paths. A link may lead anywhere outside the data set
    (data sets are often assembled from links into a pool of images), or within its own class
    folder; a link into another class's folder, or to the data root or a folder above it,
    would file other classes' images under this class, and is skipped.
    """
    target = os.path.realpath(link)
    if _inside(target, class_folder):
        return None
    if _inside(root, target):
        return f"{link}: a link to {target}, which holds the whole data set; skipped"
    if _inside(target, root):
        return f"{link}: a link into another class's folder ({target}); skipped"
    return None


def find_images(
    folder: str | os.PathLike,
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    *,
    root: str | os.PathLike | None = None,
    skipped: list[str] | None = None,
) -> list[Path]:
    """Return the image files below ``folder`` (recursive, symlinks followed), sorted by path.

    Files are chosen by name ending (case-insensitive); hidden files and folders (``.DS_Store``,
    macOS ``._name.jpg`` resource forks, ``.git``) are skipped. With ``root`` (the data set
    ``folder`` is a class of), links that would file other classes' images under this one are
    not followed (``link_problem``); why goes in ``skipped``.
    """
    extensions = tuple(e.lower() for e in extensions)
    found: list[Path] = []
    seen: set[str] = set()
    class_real = os.path.realpath(folder)
    root_real = None if root is None else os.path.realpath(root)

    def refused(path: Path) -> bool:
        if root_real is None or not path.is_symlink():
            return False
        problem = link_problem(path, class_real, root_real)
        if problem is not None and skipped is not None:
            skipped.append(problem)
        return problem is not None

    for directory, subdirectories, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen:  # a symlink loop: visit each real folder once
            subdirectories[:] = []
            continue
        seen.add(real)
        subdirectories[:] = sorted(
            d for d in subdirectories
            if not d.startswith(".") and not refused(Path(directory) / d)
        )
        for name in files:
            if (not name.startswith(".") and name.lower().endswith(extensions)
                    and not refused(Path(directory) / name)):
                found.append(Path(directory) / name)
    return sorted(found)


def class_folders(root: str | os.PathLike) -> list[str]:
    """Return the class folder names directly under ``root``, sorted (hidden ones skipped).

    Raises ``DataError`` when ``root`` is missing, not a folder, or has no sub-folders.
    """
    root = Path(os.path.expanduser(os.fspath(root)))
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; give a folder with one sub-folder per class")
    classes = sorted(
        entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")
    )
    if not classes:
        loose = [p for p in root.iterdir() if p.is_file() and is_image_file(p)]
        hint = f" ({len(loose)} images lie directly in it)" if loose else ""
        raise DataError(
            f"{root}: no class folders{hint}; put each class's images in its own "
            "sub-folder, e.g. root/cat/1.jpg, root/dog/2.jpg"
        )
    return classes


class ImageFolder:
    """Images in ``root/<class>/**``: ``samples`` is a list of (path, class index).

    ``classes`` are the sub-folder names, sorted; ``class_to_index`` maps them to indices, by
    default their position in that order. Pass ``class_to_index`` to use another mapping (for
    example ImageNet synset ids to the network's outputs); every class folder must be in it.
    At least ``min_classes`` class folders are required (2 by default: a classifier needs two
    classes; evaluation on one class passes 1). Raises ``DataError`` with one line naming the
    problem. Symbolic links that would file other classes' images under a class (a link to the
    data root, or into another class's folder) are skipped; ``skipped`` says which, one line
    each, for the caller to show as warnings.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        class_to_index: dict[str, int] | None = None,
        *,
        min_classes: int = 2,
        extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    ):
        self.root = Path(os.path.expanduser(os.fspath(root)))
        self.classes = class_folders(self.root)
        if len(self.classes) < min_classes:
            raise DataError(
                f"{self.root}: found {len(self.classes)} class folder(s) "
                f"({', '.join(self.classes)}); at least {min_classes} are needed, one "
                "sub-folder per class"
            )
        if class_to_index is None:
            class_to_index = {name: index for index, name in enumerate(self.classes)}
        else:
            unknown = [name for name in self.classes if name not in class_to_index]
            if unknown:
                shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
                raise DataError(
                    f"{self.root}: {len(unknown)} class folder(s) not in the class mapping: {shown}"
                )
        self.class_to_index = dict(class_to_index)
        self.samples: list[tuple[Path, int]] = []
        self.skipped: list[str] = []
        for name in self.classes:
            images = find_images(self.root / name, extensions, root=self.root,
                                 skipped=self.skipped)
            if not images:
                raise DataError(
                    f"{self.root / name}: class folder '{name}' has no image files "
                    f"({', '.join(IMAGE_EXTENSIONS[:6])}, ...); add images or remove the folder"
                )
            index = self.class_to_index[name]
            self.samples.extend((path, index) for path in images)

    @property
    def targets(self) -> list[int]:
        """Return the class index of every sample, in order."""
        return [index for _, index in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, position: int) -> tuple[Path, int]:
        return self.samples[position]

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.root)!r}, {len(self.classes)} classes, {len(self)} images)"
