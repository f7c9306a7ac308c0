"""The embedded default dataset: real photos shipped inside installed wheels, fakes made on the machine.

Nothing is downloaded. About 20 photographs that scikit-image, scikit-learn, matplotlib and
PyWavelets ship in their wheels are cut into distinct crops at several scales, split into
train/val/test BY SOURCE PHOTO (never by crop, or the test numbers lie), and each real crop gets a
fake counterpart from every generator family (`tfdefakeq.data.generators`). Both classes are JPEG'd
(quality 75-95) and half of the reals are laundered through a bicubic 2x down-up, so the task is
learnable by a CNN but not by a linear look at the spectrum.

Written as a ForenSynths tree (PNG, so no second lossy step after our JPEG)::

    <root>/{train,val,test}/<generator>/{0_real,1_fake}/<photo>__x<scale>__r<row>c<col>.png
    <root>/dataset.json      config, counts, sources, split of each photo, versions

A fake has the same file name as the real crop it was made from. Usage::

    from tfdefakeq.data.synthetic import SyntheticConfig, generate
    root = generate()                      # cached under $TFDEFAKEQ_CACHE or ~/.cache/tfdefakeq
    python -m tfdefakeq.data.synthetic --out data/synthetic --ae-steps 600
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tfdefakeq.core.cli import run_cli
from tfdefakeq.core.errors import UserError
from tfdefakeq.core.fileio import read_json, write_json_atomic

# Bump when a change to this module changes the pixels it writes: old caches then get a new folder.
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")

# Generator family name -> autoencoder upsampling kind, or None for the numpy upsampler.
GENERATORS: dict[str, str | None] = {
    "autoencoder": "transposed",
    "ae_nearest": "nearest",
    "ae_bilinear": "bilinear",
    "upsampler": None,
}


@dataclass(frozen=True)
class Source:
    """One photograph shipped in an installed wheel, located via the package's own folder."""

    name: str
    package: str  # import name, e.g. "skimage"
    path: str  # relative to the package folder
    group: str = ""  # photos of one scene (a stereo pair) share a group so they share a split

    @property
    def split_group(self) -> str:
        return self.group or self.name


# Photographic images only (no drawings, text or synthetic patterns). Those missing on disk are skipped.
SOURCES: tuple[Source, ...] = (
    Source("astronaut", "skimage", "data/astronaut.png"),
    Source("coffee", "skimage", "data/coffee.png"),
    Source("chelsea", "skimage", "data/chelsea.png"),
    Source("rocket", "skimage", "data/rocket.jpg"),
    Source("motorcycle_left", "skimage", "data/motorcycle_left.png", group="motorcycle"),
    Source("motorcycle_right", "skimage", "data/motorcycle_right.png", group="motorcycle"),
    Source("hubble_deep_field", "skimage", "data/hubble_deep_field.jpg"),
    Source("retina", "skimage", "data/retina.jpg"),
    Source("camera", "skimage", "data/camera.png"),
    Source("brick", "skimage", "data/brick.png"),
    Source("grass", "skimage", "data/grass.png"),
    Source("gravel", "skimage", "data/gravel.png"),
    Source("moon", "skimage", "data/moon.png"),
    Source("coins", "skimage", "data/coins.png"),
    Source("clock", "skimage", "data/clock_motion.png"),
    Source("china", "sklearn", "datasets/images/china.jpg"),
    Source("flower", "sklearn", "datasets/images/flower.jpg"),
    Source("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    Source("aero", "pywt", "data/aero.npz"),
    Source("ascent", "pywt", "data/ascent.npz"),
    Source("camera_pywt", "pywt", "data/camera.npz"),  # same pixels as skimage's camera: deduplicated
)


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that decides the dataset's pixels; its hash names the cache folder."""

    size: int = 64  # crop side in px; divisible by 4 (the autoencoder downsamples by 4)
    seed: int = 0
    generators: tuple[str, ...] = ("autoencoder", "upsampler")
    ae_steps: int = 1500  # L1 training steps of each autoencoder family, batch `ae_batch`, 32 px patches
    ae_batch: int = 32
    upsampler_sigma: float = 0.02  # std of the per-tap kernel noise (taps are 0.06-0.56)
    jpeg_quality: tuple[int, int] = (75, 95)  # inclusive range, drawn per image, both classes
    launder_fraction: float = 0.5  # fraction of REAL crops bicubic 2x down-up before JPEG
    scales: tuple[int, ...] = (1, 2, 4)  # area-downscale factors of each photo before cutting
    max_crops_per_photo: int | None = None  # a seeded random subset when set (tests, quick runs)
    min_crop_std: float = 4.0  # skip near-flat crops (retina's black corners), grey levels
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)  # train/val/test share of crops
    photos: tuple[str, ...] | None = None  # subset of SOURCES names; None = all present
    # more photographs from files outside the wheels ("name=/abs/path.jpg"; benchmarks only, e.g.
    # Debian wallpapers): read after SOURCES, split by photo with them. Omitted from the hash when None.
    extra_photos: tuple[str, ...] | None = None

    def __post_init__(self):
        # Normalise lists (from JSON or argparse) to tuples so equal configs hash equally.
        for name in ("generators", "jpeg_quality", "scales", "split_fractions", "photos", "extra_photos"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))

    def validate(self) -> None:
        """Raises UserError naming the bad field."""
        if self.size < 8 or self.size % 4:
            raise UserError(f"size: must be a multiple of 4 and at least 8, got {self.size}")
        unknown = [g for g in self.generators if g not in GENERATORS]
        if unknown or not self.generators:
            raise UserError(f"generators: unknown {unknown or 'empty'} (choose from {', '.join(GENERATORS)})")
        if len(set(self.generators)) != len(self.generators):
            raise UserError(f"generators: listed twice in {list(self.generators)}")
        if self.ae_steps < 0 or self.ae_batch < 1:
            raise UserError(f"ae_steps/ae_batch: must be >= 0 / >= 1, got {self.ae_steps}/{self.ae_batch}")
        if self.upsampler_sigma < 0:
            raise UserError(f"upsampler_sigma: must be >= 0, got {self.upsampler_sigma}")
        lo, hi = self.jpeg_quality
        if not 1 <= lo <= hi <= 100:
            raise UserError(f"jpeg_quality: need 1 <= low <= high <= 100, got {self.jpeg_quality}")
        if not 0 <= self.launder_fraction <= 1:
            raise UserError(f"launder_fraction: must be in [0, 1], got {self.launder_fraction}")
        if not self.scales or any(s < 1 for s in self.scales):
            raise UserError(f"scales: need positive integer factors, got {self.scales}")
        if self.max_crops_per_photo is not None and self.max_crops_per_photo < 1:
            raise UserError(f"max_crops_per_photo: must be >= 1, got {self.max_crops_per_photo}")
        f = self.split_fractions
        if len(f) != 3 or any(x < 0 for x in f) or f[0] <= 0 or f[2] <= 0:
            raise UserError(f"split_fractions: need 3 non-negative train/val/test shares (train, test > 0), got {f}")
        if self.photos is not None:
            names = {s.name for s in SOURCES}
            bad = [p for p in self.photos if p not in names]
            if bad:
                raise UserError(f"photos: unknown {bad} (choose from {', '.join(sorted(names))})")
        for entry in self.extra_photos or ():
            name, _, path = entry.partition("=")
            if not name or not path or name in {s.name for s in SOURCES}:
                raise UserError(f"extra_photos: need 'name=path' with a name not among the wheel photos, got {entry!r}")

    def extra_sources(self) -> tuple[Source, ...]:
        """The extra photographs as Sources (package "" means `path` is the file itself)."""
        return tuple(Source(e.partition("=")[0], "", e.partition("=")[2]) for e in self.extra_photos or ())

    def to_json(self) -> dict:
        out = json.loads(json.dumps(dataclasses.asdict(self)))
        if out["extra_photos"] is None:  # configs without extra photos keep the hash (and cache) they had
            del out["extra_photos"]
        return out

    @classmethod
    def from_json(cls, obj: dict) -> "SyntheticConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in known})

    def hash(self) -> str:
        """Short stable hash of the config and FORMAT_VERSION (names the cache folder)."""
        text = json.dumps({"format_version": FORMAT_VERSION, **self.to_json()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


@dataclass
class Photo:
    source: Source
    image: np.ndarray  # uint8 (H, W, 3)
    file: str  # where it was read from


@dataclass
class Crop:
    """A distinct size x size crop: `image` uint8 (size, size, 3) cut from `photo` at `scale`."""

    photo: str
    group: str
    scale: int
    row: int
    col: int
    image: np.ndarray = field(repr=False)

    @property
    def name(self) -> str:
        return f"{self.photo}__x{self.scale}__r{self.row:02d}c{self.col:02d}"


# --- sources -----------------------------------------------------------------------------------


def cache_dir() -> Path:
    """`$TFDEFAKEQ_CACHE`, else `~/.cache/tfdefakeq`."""
    env = os.environ.get("TFDEFAKEQ_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tfdefakeq"


def default_root(config: SyntheticConfig = SyntheticConfig()) -> Path:
    return cache_dir() / f"synthetic-{config.hash()}"


def _package_dir(package: str) -> Path | None:
    # find_spec locates the installed package folder (its __file__'s parent) without importing it.
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def source_file(source: Source) -> Path | None:
    """Path of the photo inside its installed package, or None when the package or file is absent."""
    if not source.package:  # an extra photo: the path is the file
        return Path(source.path) if Path(source.path).is_file() else None
    folder = _package_dir(source.package)
    path = folder / source.path if folder else None
    return path if path is not None and path.is_file() else None


def _read_photo(path: Path) -> np.ndarray:
    """uint8 (H, W, 3); grayscale becomes 3 equal channels, alpha is dropped."""
    if path.suffix == ".npz":
        with np.load(path) as z:
            arr = np.asarray(z[z.files[0]])
    else:
        from PIL import Image

        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im)
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float64) / max(1.0, float(arr.max())) * 255), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return np.ascontiguousarray(arr[..., :3])


def load_photos(names: tuple[str, ...] | None = None, extra: tuple[Source, ...] = ()) -> tuple[list[Photo], list[dict]]:
    """Reads the shipped photos. Returns (photos, skipped) where skipped lists {name, reason}.

    Photos whose package or file is missing are skipped, as are exact pixel duplicates of a photo
    already read (PyWavelets' camera is scikit-image's camera). `extra` sources are always read.
    """
    photos, skipped, seen = [], [], {}
    for source in SOURCES + tuple(extra):
        if names is not None and source.name not in names and source.package:
            continue
        path = source_file(source)
        if path is None:
            skipped.append({"name": source.name, "reason": f"not installed ({source.package}/{source.path})"})
            continue
        try:
            image = _read_photo(path)
        except (OSError, ValueError, KeyError) as e:
            skipped.append({"name": source.name, "reason": f"unreadable ({e.__class__.__name__}: {e})"})
            continue
        digest = hashlib.sha256(image.tobytes() + str(image.shape).encode()).hexdigest()
        if digest in seen:
            skipped.append({"name": source.name, "reason": f"duplicate of {seen[digest]}"})
            continue
        seen[digest] = source.name
        photos.append(Photo(source, image, str(path)))
    return photos, skipped


# --- crops and splits --------------------------------------------------------------------------


def _stable_id(text: str) -> int:
    return zlib.crc32(text.encode())


def area_downscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Box average over factor x factor blocks: uint8 (H, W, 3) -> uint8 (H//factor, W//factor, 3)."""
    if factor == 1:
        return image
    from tfdefakeq.data.generators import area_downsample

    return np.clip(np.rint(area_downsample(image, factor)), 0, 255).astype(np.uint8)


def cut_crops(photo: Photo, config: SyntheticConfig) -> list[Crop]:
    """Non-overlapping size x size grid crops of the photo at each scale, near-flat ones dropped.

    With `max_crops_per_photo`, a seeded random subset (stable per photo name) is kept.
    """
    size = config.size
    crops = []
    for scale in config.scales:
        image = area_downscale(photo.image, scale)
        for row in range(image.shape[0] // size):
            for col in range(image.shape[1] // size):
                patch = image[row * size : (row + 1) * size, col * size : (col + 1) * size]
                if patch.mean(axis=2).std() < config.min_crop_std:
                    continue
                crops.append(Crop(photo.source.name, photo.source.split_group, scale, row, col, np.ascontiguousarray(patch)))
    if config.max_crops_per_photo is not None and len(crops) > config.max_crops_per_photo:
        rng = np.random.default_rng([config.seed, _stable_id(photo.source.name), 1])
        keep = sorted(rng.choice(len(crops), size=config.max_crops_per_photo, replace=False))
        crops = [crops[i] for i in keep]
    return crops


def assign_splits(crop_counts: dict[str, int], fractions, seed: int, trials: int = 4000) -> dict[str, str]:
    """Assigns each group of photos (name -> number of crops) to train/val/test.

    Among `trials` seeded random assignments, keeps the one whose crop shares are closest (L1) to
    `fractions`, with every split that has a positive share getting at least one group. So the
    split is by photo, near the target shares, and a different seed gives a different split.
    """
    groups = sorted(crop_counts)
    needed = [i for i, f in enumerate(fractions) if f > 0]
    if len(groups) < len(needed):
        raise UserError(f"photos: {len(groups)} photo groups cannot fill {len(needed)} splits; use more photos")
    counts = np.array([crop_counts[g] for g in groups], dtype=np.float64)
    target = np.asarray(fractions, dtype=np.float64) / np.sum(fractions)
    rng = np.random.default_rng([seed, 0x5917])
    choice = rng.choice(3, size=(trials, len(groups)), p=target)
    shares = np.stack([(counts * (choice == s)).sum(axis=1) for s in range(3)], axis=1) / counts.sum()
    error = np.abs(shares - target).sum(axis=1)
    filled = np.all([np.any(choice == s, axis=1) for s in needed], axis=0)
    error[~filled] = np.inf
    best = int(np.argmin(error))
    if not np.isfinite(error[best]):
        raise UserError("photos: could not give every split at least one photo; use more photos")
    return {g: SPLITS[s] for g, s in zip(groups, choice[best])}


# --- writing -----------------------------------------------------------------------------------


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _versions() -> dict[str, str]:
    from importlib import metadata

    from tfdefakeq.core.manifest import versions

    out = versions()
    for dist in ("pillow", "scikit-image", "scikit-learn", "matplotlib", "PyWavelets"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    # a bar redrawn with \r is one endless line in a log: draw it on a terminal only
    return tqdm(total=total, desc=desc, disable=not enabled or not sys.stderr.isatty(), leave=False, file=sys.stderr)


def _post_real(crop: Crop, config: SyntheticConfig) -> np.ndarray:
    """Real crop -> maybe laundered -> JPEG. Seeded per crop, so it is the same in every generator folder."""
    from tfdefakeq.data.generators import jpeg, launder

    rng = np.random.default_rng([config.seed, _stable_id(crop.name), 0])
    image = launder(crop.image) if rng.random() < config.launder_fraction else crop.image
    return jpeg(image, rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))


def _post_fake(fake: np.ndarray, crop: Crop, generator: str, config: SyntheticConfig) -> np.ndarray:
    from tfdefakeq.data.generators import jpeg

    rng = np.random.default_rng([config.seed, _stable_id(crop.name), _stable_id(generator), 1])
    return jpeg(fake, rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))


def _make_fakes(generator: str, crops: list[Crop], model, config: SyntheticConfig) -> np.ndarray:
    """uint8 (N, size, size, 3) generator outputs for `crops`, before JPEG."""
    from tfdefakeq.data import generators as G

    images = np.stack([c.image for c in crops])
    if GENERATORS[generator] is not None:
        return G.apply_autoencoder(model, images)
    out = np.empty_like(images)
    for i, crop in enumerate(crops):
        # a fresh kernel per image, seeded by the crop so one crop's fake does not depend on the others
        rng = np.random.default_rng([config.seed, _stable_id(crop.name), _stable_id(generator), 2])
        out[i] = G.perturbed_upsample(crop.image, config.upsampler_sigma, rng)
    return out


def _check_existing(root: Path, config: SyntheticConfig) -> bool:
    """True when `root` already holds this config's dataset; UserError when it holds something else."""
    if not root.exists():
        return False
    if not root.is_dir():
        raise UserError(f"{root}: exists and is not a folder")
    meta = root / "dataset.json"
    if meta.is_file():
        info = read_json(meta)
        if info.get("config_hash") == config.hash():
            return True
        raise UserError(f"{root}: holds a synthetic dataset made with another config (hash {info.get('config_hash')}); choose another folder")
    if any(root.iterdir()):
        raise UserError(f"{root}: exists, is not empty and holds no dataset.json; choose another folder")
    return False


def generate(root=None, config: SyntheticConfig = SyntheticConfig(), progress: bool = True) -> Path:
    """Builds the dataset at `root` (default: `default_root(config)`) unless it is already there.

    root is the dataset folder itself (it gets train/, val/, test/ and dataset.json). Everything is
    written into a temp folder beside it and renamed into place at the end, so an interrupted run
    never leaves a tree that looks complete. Returns `root`. Raises UserError for a bad config, a
    folder holding something else, or too few photos.
    """
    config.validate()
    root = Path(root).expanduser() if root is not None else default_root(config)
    if _check_existing(root, config):
        return root
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the dataset is an ordinary readable folder
    except OSError as e:
        raise UserError(f"{root.parent}: cannot create the dataset folder ({e.strerror or e})") from e
    try:
        info = _build(tmp, config, progress)
        write_json_atomic(tmp / "dataset.json", info).chmod(0o644)
        try:
            os.rename(tmp, root)  # replaces an empty folder too
        except OSError:
            if _check_existing(root, config):  # another process finished the same dataset first
                shutil.rmtree(tmp, ignore_errors=True)
                return root
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _build(out: Path, config: SyntheticConfig, progress: bool) -> dict:
    from tfdefakeq.data import generators as G

    t0 = time.time()
    photos, skipped = load_photos(config.photos, config.extra_sources())
    crops_by_photo = {p.source.name: cut_crops(p, config) for p in photos}
    for p in photos:
        if not crops_by_photo[p.source.name]:
            skipped.append({"name": p.source.name, "reason": f"smaller than {config.size}px at every scale"})
    photos = [p for p in photos if crops_by_photo[p.source.name]]
    if not photos:
        raise UserError("no source photos found in the installed packages (need scikit-image, scikit-learn, matplotlib or PyWavelets)")
    group_counts: dict[str, int] = {}
    for p in photos:
        group_counts[p.source.split_group] = group_counts.get(p.source.split_group, 0) + len(crops_by_photo[p.source.name])
    group_split = assign_splits(group_counts, config.split_fractions, config.seed)
    split_of = {p.source.name: group_split[p.source.split_group] for p in photos}
    crops = {s: [c for p in photos if split_of[p.source.name] == s for c in crops_by_photo[p.source.name]] for s in SPLITS}

    # One autoencoder per AE family, trained on patches of the train photos only (at every scale).
    models, ae_l1 = {}, {}
    train_images = [area_downscale(p.image, s) for p in photos if split_of[p.source.name] == "train" for s in config.scales]
    for i, name in enumerate(config.generators):
        kind = GENERATORS[name]
        if kind is None:
            continue
        with _progress(config.ae_steps, f"train {name}", progress) as bar:
            models[name], ae_l1[name] = G.train_autoencoder(
                train_images, kind, steps=config.ae_steps, batch_size=config.ae_batch,
                seed=config.seed + 1000 * i, progress=bar.update,
            )

    counts: dict[str, dict] = {}
    total = sum(len(v) for v in crops.values()) * len(config.generators)
    with _progress(total, "write crops", progress) as bar:
        for split in SPLITS:
            if not crops[split]:
                continue
            reals = [_post_real(c, config) for c in crops[split]]
            counts[split] = {}
            for name in config.generators:
                fakes = _make_fakes(name, crops[split], models.get(name), config)
                folder = out / split / name
                (folder / "0_real").mkdir(parents=True)
                (folder / "1_fake").mkdir(parents=True)
                for crop, real, fake in zip(crops[split], reals, fakes):
                    (folder / "0_real" / f"{crop.name}.png").write_bytes(_png_bytes(real))
                    (folder / "1_fake" / f"{crop.name}.png").write_bytes(_png_bytes(_post_fake(fake, crop, name, config)))
                    bar.update(1)
                counts[split][name] = {"0_real": len(crops[split]), "1_fake": len(crops[split])}

    return {
        "format": "tfdefakeq-synthetic",
        "format_version": FORMAT_VERSION,
        "config": config.to_json(),
        "config_hash": config.hash(),
        "counts": counts,
        "crops_per_split": {s: len(crops[s]) for s in SPLITS},
        "photos_per_split": {s: sorted(n for n, sp in split_of.items() if sp == s) for s in SPLITS},
        "sources": [
            {
                "name": p.source.name, "group": p.source.split_group, "package": p.source.package,
                "path": p.source.path, "height": int(p.image.shape[0]), "width": int(p.image.shape[1]),
                "crops": len(crops_by_photo[p.source.name]), "split": split_of[p.source.name],
            }
            for p in photos
        ],
        "skipped_sources": skipped,
        "autoencoder_l1": ae_l1,  # mean |AE(x) - x| over the last training steps, [0, 1] pixel units
        "generation_seconds": round(time.time() - t0, 1),
        "versions": _versions(),
    }


def dataset_info(root) -> dict:
    """The `dataset.json` of a generated tree."""
    return read_json(Path(root) / "dataset.json")


# --- CLI ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = SyntheticConfig()
    p = argparse.ArgumentParser(
        prog="python -m tfdefakeq.data.synthetic",
        description="Generate the embedded synthetic real/fake dataset (no download) as a ForenSynths tree.",
    )
    p.add_argument("--out", type=Path, default=None, help="dataset folder (default: a config-named folder under $TFDEFAKEQ_CACHE or ~/.cache/tfdefakeq)")
    p.add_argument("--size", type=int, default=d.size, help="crop side in px (multiple of 4)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--generators", nargs="+", default=list(d.generators), metavar="NAME", help=f"from: {', '.join(GENERATORS)}")
    p.add_argument("--ae-steps", type=int, default=d.ae_steps, help="autoencoder training steps")
    p.add_argument("--upsampler-sigma", type=float, default=d.upsampler_sigma, help="per-tap kernel noise of the upsampler")
    p.add_argument("--jpeg-quality", type=int, nargs=2, default=list(d.jpeg_quality), metavar=("LOW", "HIGH"))
    p.add_argument("--launder-fraction", type=float, default=d.launder_fraction)
    p.add_argument("--scales", type=int, nargs="+", default=list(d.scales))
    p.add_argument("--max-crops-per-photo", type=int, default=None)
    p.add_argument("--photos", nargs="+", default=None, help="subset of source photo names")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> SyntheticConfig:
    return SyntheticConfig(
        size=args.size, seed=args.seed, generators=tuple(args.generators), ae_steps=args.ae_steps,
        upsampler_sigma=args.upsampler_sigma, jpeg_quality=tuple(args.jpeg_quality),
        launder_fraction=args.launder_fraction, scales=tuple(args.scales),
        max_crops_per_photo=args.max_crops_per_photo, photos=tuple(args.photos) if args.photos else None,
    )


def main(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    root = generate(args.out, config, progress=not args.quiet)
    info = dataset_info(root)
    print(root)
    for split, per_gen in info["counts"].items():
        cells = ", ".join(f"{g} {c['0_real']}+{c['1_fake']}" for g, c in per_gen.items())
        print(f"  {split}: {cells} (real+fake) from {len(info['photos_per_split'][split])} photos")
    return 0


def cli(argv=None) -> None:
    run_cli("synthetic", parse_args, main, argv)


if __name__ == "__main__":
    cli()
