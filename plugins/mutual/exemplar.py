"""Exemplar check for two-level images (binarised scans such as printed-circuit-board AOI crops).

On a two-level image a defect is an exact change of pixels, and the structures around it (traces, pads, holes)
recur pixel for pixel in the other images of the set. The window of the image at its map's peak is compared with
every window of up to ``bank_images`` other images of the set (exact Hamming search, faiss); the root-mean-square
difference to the nearest one is the image's score. A defect-free board's peak window (a rare corner or pad that
FCA finds unusual inside its own image) has a near-exact twin elsewhere; a defect's has none. Grey images have no
such twins (texture noise), so :func:`is_two_level` decides where this applies.
"""

from __future__ import annotations

import hashlib

import numpy as np

from anomaly_clustering import runtime
from anomaly_clustering.records import ImageSet

EXEMPLAR_SIDE = 128  # images are compared at this side (DeepPCB's native crops): larger ones are area-downsampled
MID_GREY_SHARE = 0.01  # a two-level set has at most this mean share of pixels away from both extremes
GREY_IMAGE_SHARE = 0.25  # one image with this share of mid-grey pixels makes the set grey (stop reading)
NEIGHBOURS = 64  # nearest windows fetched per query; the first from another image is used


def _grey(path: str, side: int | None = None) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        grey = im.convert("L")
        if side is not None and grey.size != (side, side):
            grey = grey.resize((side, side), Image.BOX)
        return np.asarray(grey, np.uint8)


def is_two_level(images: ImageSet) -> bool:
    """True when the set is black and white: on average at most 1 % of an image's pixels lie between 32 and 223
    (a few anti-aliased edges allowed); reading stops at the first clearly grey image."""
    shares = []
    for path in images.paths:
        grey = _grey(path)
        shares.append(float(np.mean((grey > 31) & (grey < 224))))
        if shares[-1] > GREY_IMAGE_SHARE:
            return False
    return len(shares) > 1 and float(np.mean(shares)) <= MID_GREY_SHARE


def binary_images(images: ImageSet, side: int = EXEMPLAR_SIDE) -> np.ndarray:
    """N×side×side booleans: each image area-resized to ``side`` and split at mid-grey."""
    return np.stack([_grey(p, side) > 127 for p in runtime.progress(images.paths, desc="exemplar: read", unit="img")])


def image_keys(binary: np.ndarray) -> list[str]:
    """A content hash per binary image: pixel-identical images share one, so an image never matches itself."""
    return [hashlib.sha1(np.packbits(b).tobytes()).hexdigest() for b in binary]


def peak_corners(maps: np.ndarray, side: int, window: int) -> np.ndarray:
    """N×2 top-left corners (y, x) of the ``window``-pixel windows centred on each map's peak, in ``side`` pixels."""
    n, h, w = maps.shape
    flat = np.asarray(maps, np.float32).reshape(n, -1).argmax(1)
    cy = (flat // w + 0.5) * side / h
    cx = (flat % w + 0.5) * side / w
    corners = np.stack([cy, cx], 1).astype(np.int64) - window // 2
    return np.clip(corners, 0, side - window)


class ExemplarBank:
    """Every ``window``×``window`` window (stride 1) of a set of binary images, searchable by Hamming distance."""

    def __init__(self, binary: np.ndarray, keys: list[str], window: int):
        import faiss
        from numpy.lib.stride_tricks import sliding_window_view

        n, side, _ = binary.shape
        per = (side - window + 1) ** 2
        self.window, self.keys = window, np.array(keys)
        self.codes = np.concatenate([  # packed one image at a time: the unpacked windows of a whole set would not fit
            np.packbits(sliding_window_view(b, (window, window)).reshape(per, window * window), axis=1) for b in binary])
        self.owner = np.repeat(np.arange(n), per)
        self.index = faiss.IndexBinaryFlat(self.codes.shape[1] * 8)
        self.index.add(self.codes)

    def rms_difference(self, queries: np.ndarray, query_keys: list[str]) -> np.ndarray:
        """Per query window (Q×window×window booleans), the RMS difference to its nearest window in a bank image of
        other content (``query_keys``: the queries' image hashes)."""
        codes = np.packbits(queries.reshape(len(queries), -1), axis=1)
        dist, idx = self.index.search(codes, min(NEIGHBOURS, len(self.codes)))
        best = np.empty(len(queries), np.float64)
        for q in range(len(queries)):
            other = self.keys[self.owner[idx[q]]] != query_keys[q]
            best[q] = dist[q][other][0] if other.any() else self._exhaustive(codes[q], query_keys[q])
        return np.sqrt(best / queries[0].size)

    def _exhaustive(self, code: np.ndarray, key: str, chunk: int = 1 << 20) -> float:
        """The exact nearest distance over the windows of other images (rare: every fetched window was the query's
        own, as on a blank board with pixel-identical copies), in chunks of ``chunk`` windows."""
        best = float(code.size * 8)
        for start in range(0, len(self.codes), chunk):
            other = self.keys[self.owner[start:start + chunk]] != key
            if other.any():
                bits = np.bitwise_count(np.bitwise_xor(self.codes[start:start + chunk][other], code[None])).sum(1)
                best = min(best, float(bits.min()))
        return best


def exemplar_scores(binary: np.ndarray, keys: list[str], maps: np.ndarray, bank: ExemplarBank) -> np.ndarray:
    """Per image, the RMS difference of its peak window to the nearest window of the bank's other images."""
    side, window = binary.shape[1], bank.window
    corners = peak_corners(maps, side, window)
    queries = np.stack([b[y:y + window, x:x + window] for b, (y, x) in zip(binary, corners)])
    return bank.rms_difference(queries, keys)
