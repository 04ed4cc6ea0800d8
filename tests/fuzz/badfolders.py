"""Generators of bad (and odd-but-valid) image folders, a per-case time limit, and run-folder checks, shared by the
fuzz / fault suite and the reliability tests. Every image is tiny (24–40 px) so a case costs a second or two."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import struct
import zlib
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

#: Outputs a finished run folder holds (k_selection.json only when K was estimated).
RUN_OUTPUTS = {"clusters.csv", "maps", "masks", "records", "model", "config.yaml", "summary.json"}


class CaseTimeout(BaseException):
    """A case ran past its time limit (a hang). A BaseException, so no ``except Exception`` in the code swallows it."""


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Raise CaseTimeout in the main thread after ``seconds`` (SIGALRM interrupts blocking calls such as opening a FIFO)."""

    def fire(signum, frame):  # noqa: ANN001
        raise CaseTimeout(f"no answer within {seconds} s (a hang)")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def texture(rng: np.random.Generator, size: int | tuple[int, int] = 32, kind: int = 0) -> np.ndarray:
    """A small RGB uint8 texture; ``kind`` 1/2/3 plant a dark spot, a bright line or a colour stain."""
    h, w = (size, size) if isinstance(size, int) else size
    base = rng.normal(128, 12, (h, w, 3))
    if kind == 1:
        base[h // 3 : h // 3 + max(2, h // 5), w // 3 : w // 3 + max(2, w // 5)] = 20
    elif kind == 2:
        base[h // 2 : h // 2 + 2, 2 : w - 2] = 250
    elif kind == 3:
        base[h // 4 : h // 2, w // 2 : w - 3, 0] = 240
    return np.clip(base, 0, 255).astype(np.uint8)


def good_images(folder: Path, n: int = 6, size: int = 32, seed: int = 0, prefix: str = "img") -> list[Path]:
    """``n`` distinct small textures (defect kinds cycling), as PNG files."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"{prefix}{i:02d}.png"
        Image.fromarray(texture(rng, size, i % 4)).save(p)
        out.append(p)
    return out


def bomb_png(path: Path, side: int = 30_000) -> None:
    """A valid single-colour 1-bit PNG of ``side``×``side`` pixels (~110 kB on disk, 112 MB decoded), written
    without ever holding the decoded image (compressed in row blocks)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    block = row * 1000
    body = b"".join(comp.compress(block) for _ in range(side // 1000)) + comp.compress(row * (side % 1000)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def exif_rotated_jpeg(path: Path, rgb: np.ndarray, orientation: int = 6) -> None:
    """A JPEG stored as ``rgb`` (H×W) with an EXIF orientation tag (6: displayed rotated 90°, W×H on screen)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(path, exif=exif.tobytes(), quality=95)


def same_picture_many_ways(folder: Path, rgb: np.ndarray, stem: str, n: int = 4) -> list[Path]:
    """The same pixels saved ``n`` times: PNG at different compression levels, then BMP and TIFF."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        if i < n - 2 or n < 3:
            p = folder / f"{stem}_c{i}.png"
            Image.fromarray(rgb).save(p, compress_level=[0, 9, 1, 6, 3][i % 5])
        elif i == n - 2:
            p = folder / f"{stem}.bmp"
            Image.fromarray(rgb).save(p)
        else:
            p = folder / f"{stem}.tif"
            Image.fromarray(rgb).save(p)
        out.append(p)
    return out


# ------------------------------------------------------------------------------------------- the fuzz cases
def _mixed_modes(d: Path) -> None:
    rng = np.random.default_rng(3)
    d.mkdir(parents=True)
    Image.fromarray(texture(rng, 32, 0)).save(d / "rgb.png")
    Image.fromarray(texture(rng, 32, 1)).convert("L").save(d / "grey.png")
    Image.fromarray(texture(rng, 32, 2)).convert("P").save(d / "palette.png")
    Image.fromarray(np.dstack([texture(rng, 32, 3), np.full((32, 32), 120, np.uint8)]), "RGBA").save(d / "rgba.png")
    Image.fromarray(texture(rng, 32, 1)[..., 0].astype(np.uint16) * 257).save(d / "sixteen.png")
    Image.fromarray(texture(rng, 32, 2)).convert("1").save(d / "bilevel.png")
    Image.fromarray(texture(rng, 32, 3)).convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray(texture(rng, 32, 0)).convert("F").save(d / "float.tif")
    Image.fromarray(texture(rng, 40, 1)).convert("LA").save(d / "grey_alpha.png")


def _tiny_and_thin(d: Path) -> None:
    good_images(d, 5)
    Image.new("RGB", (1, 1), (9, 9, 9)).save(d / "one_pixel.png")
    rng = np.random.default_rng(4)
    Image.fromarray(texture(rng, (2, 300), 1)).save(d / "thin_2x300.png")
    Image.fromarray(texture(rng, (300, 3), 2)).save(d / "tall_300x3.png")


def _truncated_and_garbage(d: Path) -> None:
    good_images(d, 5)
    data = (d / "img00.png").read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 2])
    (d / "empty.png").write_bytes(b"")
    (d / "text.jpg").write_text("not an image at all\n")
    (d / "header_only.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (d / "random.bmp").write_bytes(np.random.default_rng(5).integers(0, 256, 4000, dtype=np.uint8).tobytes())


def _links(d: Path) -> None:
    good_images(d, 5)
    os.symlink("loop_b.png", d / "loop_a.png")
    os.symlink("loop_a.png", d / "loop_b.png")
    os.symlink("missing.png", d / "dangling.png")
    os.symlink(".", d / "self_dir")  # a folder link back to itself
    (d / "sub").mkdir()
    os.symlink("..", d / "sub" / "up")
    os.symlink("img00.png", d / "link_to_good.png")  # a link to a real image is an image


def _special_files(d: Path) -> None:
    good_images(d, 5)
    os.mkfifo(d / "fifo.png")
    (d / "folder.png").mkdir()
    Image.fromarray(texture(np.random.default_rng(6), 32, 1)).save(d / "folder.png" / "inside.png")


def _odd_names(d: Path) -> None:
    rng = np.random.default_rng(7)
    d.mkdir(parents=True)
    for i, name in enumerate(["with space.png", "ünïcödé.png", "-leading-dash.png", "100%.png", "hash#1.png", "semi;colon.png",
                              "quote'.png", 'dq".png', "comma,name.png", "UPPER.PNG", "line\nbreak.png", "tab\tname.png"]):
        Image.fromarray(texture(rng, 32, i % 4)).save(d / name)


def _colliding_names(d: Path) -> None:
    rng = np.random.default_rng(8)
    (d / "x").mkdir(parents=True)
    for i, name in enumerate(["x/y.png", "x__y.png", "img.png", "img.jpg", "IMG.bmp", "x__y_png.png"]):
        Image.fromarray(texture(rng, (24 + 4 * i, 32), i % 4)).save(d / name)


def _duplicates(d: Path) -> None:
    rng = np.random.default_rng(9)
    same_picture_many_ways(d, texture(rng, 32, 1), "dup", 5)
    good_images(d, 4, seed=10)


def _bomb(d: Path) -> None:
    good_images(d, 5)
    bomb_png(d / "bomb.png")


def _exif(d: Path) -> None:
    good_images(d, 4)
    exif_rotated_jpeg(d / "rotated.jpg", texture(np.random.default_rng(11), (24, 40), 2))
    exif_rotated_jpeg(d / "mirrored.jpg", texture(np.random.default_rng(12), (40, 24), 3), orientation=5)


def _deep(d: Path) -> None:
    p = d
    for i in range(12):
        p = p / f"level{i}"
    good_images(p, 3)
    good_images(d / "top", 3, seed=13)


def _hidden_and_skipped(d: Path) -> None:
    good_images(d, 4)
    good_images(d / ".hidden", 2, seed=14)
    good_images(d / "ground_truth", 2, seed=15)
    Image.fromarray(texture(np.random.default_rng(16), 32, 2)).save(d / ".dotfile.png")


def _all_identical(d: Path) -> None:
    same_picture_many_ways(d, texture(np.random.default_rng(17), 32, 2), "same", 4)


def _one_image(d: Path) -> None:
    good_images(d, 1)


def _two_images(d: Path) -> None:
    good_images(d, 2)


def _two_distinct_many_copies(d: Path) -> None:
    rng = np.random.default_rng(18)
    same_picture_many_ways(d, texture(rng, 32, 1), "a", 3)
    same_picture_many_ways(d, texture(rng, 32, 2), "b", 3)


def _empty(d: Path) -> None:
    d.mkdir(parents=True)


def _no_images(d: Path) -> None:
    d.mkdir(parents=True)
    (d / "notes.txt").write_text("x")
    (d / "data.csv").write_text("a,b\n")


def _only_bad(d: Path) -> None:
    d.mkdir(parents=True)
    (d / "a.png").write_bytes(b"junk")
    (d / "b.jpg").write_bytes(b"")
    os.mkfifo(d / "c.png")


def _bad_exif(d: Path) -> None:
    good_images(d, 4)
    img = Image.fromarray(texture(np.random.default_rng(19), 32, 3))
    exif = Image.Exif()
    exif[0x0112] = 99  # an orientation that does not exist
    img.save(d / "odd_orientation.jpg", exif=exif.tobytes())


FUZZ_CASES: dict[str, Callable[[Path], None]] = {
    "mixed_modes": _mixed_modes,
    "tiny_and_thin": _tiny_and_thin,
    "truncated_and_garbage": _truncated_and_garbage,
    "symlink_loops": _links,
    "fifo_and_folder_named_png": _special_files,
    "odd_names": _odd_names,
    "colliding_names": _colliding_names,
    "duplicates": _duplicates,
    "decompression_bomb": _bomb,
    "exif_orientation": _exif,
    "bad_exif_tag": _bad_exif,
    "deep_nesting": _deep,
    "hidden_and_skipped_folders": _hidden_and_skipped,
    "all_identical": _all_identical,
    "one_image": _one_image,
    "two_images": _two_images,
    "two_distinct_many_copies": _two_distinct_many_copies,
    "empty_folder": _empty,
    "no_images": _no_images,
    "only_unreadable": _only_bad,
}


def run_state(run: Path) -> str:
    """'none' (no outputs), 'whole' (every output of a finished run) or 'partial' (anything else: a failure)."""
    present = {p.name for p in run.iterdir() if not p.name.startswith(".")} & RUN_OUTPUTS if run.exists() else set()
    if not present:
        return "none"
    return "whole" if present == RUN_OUTPUTS else "partial"


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()
