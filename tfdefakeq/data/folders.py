"""Dataset folder layouts, read without TensorFlow so the on-device runtime can use them.

Every reader returns `Sample`s (path, label, generator, video); `scan_dataset` picks the reader for a
root by its layout. ForenSynths / CNNDetection layout::

    <root>/<split>/<generator>/0_real/*.png
    <root>/<split>/<generator>/1_fake/*.png
    <root>/<split>/<generator>/<class>/{0_real,1_fake}/*   (nested class folders, as in ProGAN's train set)

`root` may also point straight at one split (`<root>/<generator>/{0_real,1_fake}`) or at one
generator folder (`<root>/{0_real,1_fake}`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tfdefakeq.core.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
LABEL_FOLDERS = {"0_real": 0, "1_fake": 1}
SPLITS = ("train", "val", "test")
SPLIT_HELP = ("train, val or test folder of --data (default: {default} when --data holds split folders, "
              "else --data itself)")


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # 0 real, 1 fake
    generator: str  # test set name: the generator / manipulation folder
    video: str | None = None  # frames of one video share this id (video-level metrics)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _class_samples(folder: Path, label: int, generator: str, missing: str) -> list[Sample]:
    """The images of one class folder; UserError (`missing` explains why it should exist) if it is
    absent or empty."""
    if not folder.is_dir():
        raise UserError(f"{folder}: {missing}")
    images = _images_in(folder)
    if not images:
        raise UserError(f"{folder}: class folder holds no images")
    return [Sample(p, label, generator) for p in images]


def _label_parents(root: Path) -> list[Path]:
    """Folders under `root` (itself included) that directly hold a 0_real or 1_fake folder."""
    parents = {p.parent for name in LABEL_FOLDERS for p in root.rglob(name) if p.is_dir()}
    if any((root / name).is_dir() for name in LABEL_FOLDERS):
        parents.add(root)
    return sorted(parents)


def split_folders(root) -> list[str]:
    """The split folders (train, val, test) directly under `root`."""
    root = Path(root)
    return [name for name in SPLITS if (root / name).is_dir()]


def choose_split(root, split: str | None, default: str) -> str | None:
    """The split a verb reads: `split` when given; else `default` when `root` holds split folders (or is a
    DeepfakeBench JSON), None (`root` itself) when it holds none. A root with splits but no `default`
    folder is a UserError: reading train/ as a test set would be a silent mistake."""
    if split is not None:
        return split
    root = Path(root)
    if root.is_file():
        return default
    found = split_folders(root)
    if not found:
        return None
    if default not in found:
        raise UserError(f"{root}: holds the splits {', '.join(found)} but no {default}/: pass --split")
    return default


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
    if split is None and split_folders(base):
        raise UserError(f"{base}: holds the splits {', '.join(split_folders(base))}, "
                        "which would be read as generators: pass a split (e.g. --split test)")
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
            samples += _class_samples(parent / name, label, generator,
                                      "missing class folder (each generator needs 0_real and 1_fake)")
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


# ---- UniversalFakeDetect: real/fake folder pairs per generator ------------------------------------

REAL_NAMES = ("0_real", "real")
FAKE_NAMES = ("1_fake", "fake")


def scan_real_fake_pairs(root, pairs: dict[str, tuple[str, str]] | None = None) -> list[Sample]:
    """UniversalFakeDetect-style data: each generator is a (real folder, fake folder) pair.

    With `pairs` ({generator: (real_dir, fake_dir)}, paths relative to `root` or absolute), the
    folders are taken as given (several generators may share one real folder, as UnivFD's diffusion
    sets share LAION reals). Without it, every `<root>/<generator>/` holding a `real`/`0_real` and a
    `fake`/`1_fake` folder is one pair. Raises UserError naming the folder that is missing or empty.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: dataset folder not found")
    if pairs is None:
        pairs = {}
        for gen_dir in sorted(d for d in root.iterdir() if d.is_dir()):
            real = next((gen_dir / n for n in REAL_NAMES if (gen_dir / n).is_dir()), None)
            fake = next((gen_dir / n for n in FAKE_NAMES if (gen_dir / n).is_dir()), None)
            if real is None and fake is None:
                continue
            if real is None or fake is None:
                missing = "real" if real is None else "fake"
                raise UserError(f"{gen_dir}: has no {missing} folder (expected a real/fake or 0_real/1_fake pair)")
            pairs[gen_dir.name] = (str(real), str(fake))
        if not pairs:
            raise UserError(f"{root}: no <generator>/real + <generator>/fake folder pairs found")
    samples: list[Sample] = []
    for generator, (real_dir, fake_dir) in sorted(pairs.items()):
        for label, folder in ((0, Path(real_dir)), (1, Path(fake_dir))):
            folder = folder if folder.is_absolute() else root / folder
            samples += _class_samples(folder, label, generator, f"folder of generator {generator!r} not found")
    return samples


# ---- FaceForensics++ frame folders and DeepfakeBench dataset JSON --------------------------------

FFPP_REAL = "original_sequences"
FFPP_FAKE = "manipulated_sequences"


def scan_ffpp_frames(root, compression: str = "c23", methods: list[str] | None = None,
                     videos: set[str] | None = None) -> list[Sample]:
    """FaceForensics++ frames extracted per video::

        <root>/original_sequences/youtube/<c>/frames/<video>/*.png            (real)
        <root>/manipulated_sequences/<Method>/<c>/frames/<video>/*.png         (fake, one set per method)

    Each manipulation method is a test set; the reals are shared by all of them (grouped under the
    generator name "youtube" for training, and paired with each method by `per_method_sets`).
    `videos` keeps only those video ids (FF++'s official splits list ids such as "071_054"; a real
    video's id is its first number). Every Sample carries its video id for video-level metrics.
    """
    root = Path(root)
    real_root = root / FFPP_REAL / "youtube" / compression / "frames"
    fake_base = root / FFPP_FAKE
    if not real_root.is_dir():
        raise UserError(f"{real_root}: FaceForensics++ real frames folder not found")
    if not fake_base.is_dir():
        raise UserError(f"{fake_base}: FaceForensics++ manipulated_sequences folder not found")
    found = sorted(d.name for d in fake_base.iterdir() if (d / compression / "frames").is_dir())
    methods = methods or found
    unknown = sorted(set(methods) - set(found))
    if unknown:
        raise UserError(f"{fake_base}: no {compression} frames for method(s) {', '.join(unknown)} (found: {', '.join(found) or 'none'})")
    samples: list[Sample] = []
    for generator, label, frames_root in [("youtube", 0, real_root)] + [(m, 1, fake_base / m / compression / "frames") for m in methods]:
        for video_dir in sorted(d for d in frames_root.iterdir() if d.is_dir()):
            if videos is not None and video_dir.name not in videos and video_dir.name.split("_")[0] not in videos:
                continue
            frames = _images_in(video_dir)
            samples.extend(Sample(p, label, generator, video=f"{generator}/{video_dir.name}") for p in frames)
    if not any(s.label == 0 for s in samples) or not any(s.label == 1 for s in samples):
        raise UserError(f"{root}: FaceForensics++ frames found for only one class (check --videos / compression {compression})")
    return samples


def per_method_sets(samples: list[Sample], real_generator: str = "youtube") -> list[Sample]:
    """Pairs the shared reals with every fake set: each method becomes a balanced test set
    (reals repeated under each method's name), as FF++ results are reported per manipulation."""
    reals = [s for s in samples if s.generator == real_generator]
    methods = sorted({s.generator for s in samples if s.generator != real_generator})
    out = [s for s in samples if s.generator != real_generator]
    for method in methods:
        out.extend(Sample(s.path, s.label, method, s.video) for s in reals)
    return out


def _paired_sets(source: Path, samples: list[Sample], real_generator: str) -> list[Sample]:
    """`per_method_sets`, after checking `samples` hold both reals and at least one fake set (each
    set must be scored against reals); UserError naming `source` otherwise."""
    for label, kind in ((0, "real"), (1, "fake")):
        if not any(s.label == label for s in samples):
            raise UserError(f"{source}: no {kind} images (each fake set is scored against the shared reals)")
    return per_method_sets(samples, real_generator=real_generator)


def scan_deepfakebench_json(json_path, split: str = "test", compression: str = "c23",
                            frames_root=None) -> list[Sample]:
    """A DeepfakeBench dataset JSON::

        {dataset: {label_name: {split: {compression: {video: {"label": name, "frames": [paths]}}}}}}

    Label names ending in "real" (e.g. "FF-real", "Celeb-real", "DFDC_Real") are class 0, all others
    fake; each fake label name is its own test set, reals are grouped as "real" (`scan_dataset` pairs
    them with every fake set through `per_method_sets`, as for FF++ frames). Frame paths are
    resolved against `frames_root` when relative (DeepfakeBench stores them relative to its
    `rgb_dir`). Compression levels only exist for FF++; other datasets are read whatever their key.
    """
    from tfdefakeq.core.fileio import read_json

    json_path = Path(json_path)
    data = read_json(json_path)
    base = Path(frames_root) if frames_root else json_path.parent
    if not isinstance(data, dict) or len(data) != 1:
        raise UserError(f"{json_path}: not a DeepfakeBench dataset JSON (expected one top-level dataset name)")
    (dataset, labels), = data.items()
    samples: list[Sample] = []
    try:
        for label_name, splits in labels.items():
            label = 0 if label_name.lower().endswith("real") else 1
            generator = "real" if label == 0 else label_name
            block = splits.get(split, {})
            levels = [block[compression]] if compression in block else list(block.values())
            for level in levels:
                # FF++ nests compression levels; other datasets put videos straight under the split
                videos = level if all(isinstance(v, dict) and "frames" in v for v in level.values()) else {}
                for video, info in videos.items():
                    for frame in info["frames"]:
                        path = Path(frame)
                        samples.append(Sample(path if path.is_absolute() else base / path, label, generator,
                                              video=f"{label_name}/{video}"))
    except (AttributeError, KeyError, TypeError) as e:
        raise UserError(f"{json_path}: unexpected DeepfakeBench JSON structure ({e.__class__.__name__}: {e})") from e
    if not samples:
        raise UserError(f"{json_path}: no frames for split {split!r} in dataset {dataset!r}")
    return samples


def scan_dataset(root, split: str | None = None) -> list[Sample]:
    """Reads `root` with the reader its layout calls for: a DeepfakeBench .json file, an FF++ tree
    (original_sequences + manipulated_sequences), a ForenSynths tree (0_real/1_fake), or real/fake
    pairs (UniversalFakeDetect)."""
    root = Path(root)
    if root.is_file() and root.suffix == ".json":
        return _paired_sets(root, scan_deepfakebench_json(root, split=split or "test"), real_generator="real")
    if (root / FFPP_REAL).is_dir():
        return _paired_sets(root, scan_ffpp_frames(root), real_generator="youtube")
    base = root / split if split else root
    if base.is_dir() and any((d / name).is_dir() for d in base.iterdir() if d.is_dir() for name in ("real", "fake")):
        return scan_real_fake_pairs(base)
    return scan_forensynths(root, split)


def group_by_video(items) -> dict[str, list[int]]:
    """video id -> indices of its frames in `items`: Samples (their `.video`) or the video ids
    themselves; items without a video (None) are left out."""
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        video = item.video if isinstance(item, Sample) else item
        if video is not None:
            groups.setdefault(str(video), []).append(i)
    return groups
