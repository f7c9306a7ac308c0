"""Dataset folder layouts, read without TensorFlow so the on-device runtime can use them.

ForenSynths / CNNDetection layout::

    <root>/<split>/<generator>/0_real/*.png
    <root>/<split>/<generator>/1_fake/*.png
    <root>/<split>/<generator>/<class>/{0_real,1_fake}/*   (nested class folders, as in ProGAN's train set)

`root` may also point straight at one split (`<root>/<generator>/{0_real,1_fake}`) or at one
generator folder (`<root>/{0_real,1_fake}`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tfdefakeq.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
LABEL_FOLDERS = {"0_real": 0, "1_fake": 1}


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # 0 real, 1 fake
    generator: str  # test set name: the generator / manipulation folder


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _label_parents(root: Path) -> list[Path]:
    """Folders under `root` (itself included) that directly hold a 0_real or 1_fake folder."""
    parents = {p.parent for name in LABEL_FOLDERS for p in root.rglob(name) if p.is_dir()}
    if any((root / name).is_dir() for name in LABEL_FOLDERS):
        parents.add(root)
    return sorted(parents)


def scan_forensynths(root, split: str | None = None) -> list[Sample]:
    """Lists the labelled images of a ForenSynths-style tree, one generator per top folder.

    Raises UserError naming the folder when the root or split is missing, when no 0_real/1_fake
    folders are found, when a label folder is empty or missing its partner, or when a folder
    beside them has a name that is not a label (a mislabeled folder).
    """
    root = Path(root)
    base = root / split if split else root
    if not base.is_dir():
        raise UserError(f"{base}: dataset folder not found")
    parents = _label_parents(base)
    if not parents:
        raise UserError(f"{base}: no 0_real/1_fake folders found (expected <generator>/0_real and <generator>/1_fake)")
    samples: list[Sample] = []
    for parent in parents:
        rel = parent.relative_to(base).parts
        generator = rel[0] if rel else base.name
        subdirs = [d for d in parent.iterdir() if d.is_dir()]
        strays = [d for d in subdirs if d.name not in LABEL_FOLDERS and not _label_parents(d)]
        if strays:
            raise UserError(f"{strays[0]}: folder name is not a label (expected 0_real or 1_fake)")
        for name, label in LABEL_FOLDERS.items():
            folder = parent / name
            if not folder.is_dir():
                raise UserError(f"{folder}: missing class folder (each generator needs 0_real and 1_fake)")
            images = _images_in(folder)
            if not images:
                raise UserError(f"{folder}: class folder holds no images")
            samples.extend(Sample(p, label, generator) for p in images)
    return samples


def generators_of(samples: list[Sample]) -> list[str]:
    return sorted({s.generator for s in samples})


def balanced_subset(samples: list[Sample], n: int, seed: int = 0) -> list[Sample]:
    """Up to `n` samples spread evenly over (generator, label) groups, chosen reproducibly."""
    import random

    groups: dict[tuple[str, int], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.generator, s.label), []).append(s)
    rng = random.Random(seed)
    for members in groups.values():
        rng.shuffle(members)
    picked: list[Sample] = []
    while len(picked) < n and any(groups.values()):
        for key in sorted(groups):
            if groups[key] and len(picked) < n:
                picked.append(groups[key].pop())
    return picked
