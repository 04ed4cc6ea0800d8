"""zarr v3 (chunked array, crc32c codec, LocalStore) against our ShardedArrayWriter / NpyRows for the feature cache.

    python benchmarks/zarr_store.py [--rows 512] [--shape 112 32 32] [--shard 16] [--work runs/zarr_store]

Each backend runs in its own process (peak memory is its own): write every shard of an N×C×H×W float16 array,
read it back shard by shard, read 256 random rows, then the torn-write check — flip bytes inside one stored shard /
chunk and see whether reopening (ours: ``pending()``) or reading (zarr: the crc32c codec) notices. Ours fsyncs every
shard; zarr's LocalStore writes each chunk to a temporary file and renames it, without fsync. Prints a Markdown
table. The decision it informs is written in docs/store-zarr.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _rows(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal((n, *shape), dtype=np.float32).astype(np.float16)


def run_ours(folder: Path, n: int, shape: tuple[int, ...], shard: int) -> dict:
    from anomaly_clustering.store import NpyRows, ShardedArrayWriter

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    w = ShardedArrayWriter(folder, (n, *shape), np.float16, shard)
    for s in w.pending():
        rows = w.shard_rows(s)
        w.write(s, _rows(rng, len(rows), shape))
    w.close()
    write = time.perf_counter() - t0
    arr = NpyRows(folder / "data.npy")
    t0 = time.perf_counter()
    total = sum(float(arr[i : i + shard].astype(np.float32).sum()) for i in range(0, n, shard))
    read = time.perf_counter() - t0
    idx = np.random.default_rng(1).integers(0, n, 256)
    t0 = time.perf_counter()
    for i in idx:
        arr[int(i)]
    random_read = time.perf_counter() - t0
    arr.close()
    with open(folder / "data.npy", "r+b") as fh:  # torn write inside shard 3
        fh.seek(NpyRows(folder / "data.npy").offset + 3 * shard * int(np.prod(shape)) * 2 + 100)
        fh.write(b"\xff" * 64)
    w = ShardedArrayWriter(folder, (n, *shape), np.float16, shard, create=False)
    detected = 3 in w.pending()
    w.close()
    return {"write_s": write, "read_s": read, "random_read_s": random_read, "torn_detected": detected, "checksum": total}


def run_zarr(folder: Path, n: int, shape: tuple[int, ...], shard: int) -> dict:
    import zarr
    from zarr.codecs import BytesCodec, Crc32cCodec

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    z = zarr.create_array(store=str(folder), shape=(n, *shape), chunks=(shard, *shape), dtype="float16",
                          serializer=BytesCodec(), compressors=[Crc32cCodec()], overwrite=True)  # crc32c per chunk
    for s in range(0, n, shard):
        z[s : s + shard] = _rows(rng, min(shard, n - s), shape)
    write = time.perf_counter() - t0
    z = zarr.open_array(str(folder), mode="r")
    t0 = time.perf_counter()
    total = sum(float(z[i : i + shard].astype(np.float32).sum()) for i in range(0, n, shard))
    read = time.perf_counter() - t0
    idx = np.random.default_rng(1).integers(0, n, 256)
    t0 = time.perf_counter()
    for i in idx:
        z[int(i)]
    random_read = time.perf_counter() - t0
    chunk = next(p for p in folder.rglob("*") if p.is_file() and p.parts[-len(shape) - 2 :][0] == "c" and p.parts[-len(shape) - 1] == "3")
    with open(chunk, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\xff" * 64)
    try:
        zarr.open_array(str(folder), mode="r")[3 * shard]
        detected = False
    except Exception:  # noqa: BLE001 — the codec's checksum error
        detected = True
    return {"write_s": write, "read_s": read, "random_read_s": random_read, "torn_detected": detected, "checksum": total}


def child(backend: str, folder: str, n: int, shape: list[int], shard: int) -> None:
    if backend == "ours":
        import anomaly_clustering.store  # noqa: F401  (imports before the baseline)
    else:
        import zarr  # noqa: F401
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    fn = run_ours if backend == "ours" else run_zarr
    out = fn(Path(folder), n, tuple(shape), shard)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--shape", type=int, nargs="+", default=[112, 32, 32])
    ap.add_argument("--shard", type=int, default=16)
    ap.add_argument("--work", default="runs/zarr_store")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.work, args.rows, args.shape, args.shard)
        return
    mb = args.rows * int(np.prod(args.shape)) * 2 / 2**20
    print(f"{args.rows} rows of {tuple(args.shape)} float16 ({mb:.0f} MB), shard/chunk {args.shard} rows\n")
    print("| store | write s | read all s | 256 random rows s | peak RSS above imports MB | torn shard detected |")
    print("|---|---|---|---|---|---|")
    for backend in ("ours", "zarr"):
        folder = Path(args.work) / backend
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        cmd = [sys.executable, __file__, "--child", backend, "--work", str(folder), "--rows", str(args.rows), "--shard", str(args.shard), "--shape", *map(str, args.shape)]
        r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ).stdout.strip().splitlines()[-1])
        print(f"| {backend} | {r['write_s']:.2f} | {r['read_s']:.2f} | {r['random_read_s']:.3f} | {r['peak_rss_mb']:.0f} | {r['torn_detected']} |", flush=True)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
