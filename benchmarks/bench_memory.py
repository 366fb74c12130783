"""Peak resident memory of soft targets larger than RAM: streamed cache, verified hit, one distillation epoch.

A synthetic transfer set of ``--rows`` x ``--features`` float32 features is written to a
``.npy`` file in blocks and opened as a read-only memmap. A cheap synthetic teacher (a fixed
random linear layer to ``--classes`` logits) streams over it into a float16 memory-mapped
cache (``darkknowledge.memmap.stream_teacher_logits``); 2 M x 1000 float16 is 4 GB on disk.
Then one epoch of distillation: a small MLP student on the features, minibatches of rows
gathered from both files (``gather_rows``: sorted rows, ``os.pread``), the fused distillation loss (soft targets only, T = 4).

Peak resident memory (``VmHWM`` of ``/proc/self/status``, which counts file-backed pages mapped
into the process too) is reset before each phase (``/proc/self/clear_refs``, Linux) and printed
per phase. Everything is written under a temporary folder (``--dir``) and deleted at the end.

    python benchmarks/bench_memory.py                          # 2 M rows x 1000 classes (~4.3 GB of disk)
    python benchmarks/bench_memory.py --rows 200000            # a quick run
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from darkknowledge.data.batches import gather_rows
from darkknowledge.losses import distillation_loss
from darkknowledge.memmap import stream_teacher_logits

GiB = 1024**3


def vm_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def write_features(path: Path, rows: int, features: int, block: int) -> None:
    """(rows, features) float32 standard normal, appended block by block to a .npy file."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_2_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (rows, features)})
        rng = np.random.default_rng(0)
        for start in range(0, rows, block):
            f.write(rng.standard_normal((min(block, rows - start), features), dtype=np.float32).tobytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--block-rows", type=int, default=8192)
    ap.add_argument("--release-every", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temporary folder)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    scratch = Path(tempfile.mkdtemp(prefix="bench_memory_", dir=args.dir))
    free = shutil.disk_usage(scratch).free
    need = args.rows * (args.features * 4 + args.classes * 2) * 1.05
    if free < need:
        raise SystemExit(f"needs {need / GiB:.1f} GiB of free disk in {scratch}, has {free / GiB:.1f} GiB")
    rows_out = []
    try:
        print(f"{args.rows:,} rows x {args.features} features -> {args.classes} classes, float16 cache; "
              f"baseline RSS {vm_kib('VmRSS') / 1024:.0f} MiB (torch imported)")

        t0 = time.perf_counter()
        write_features(scratch / "X.npy", args.rows, args.features, args.block_rows)
        X = np.load(scratch / "X.npy", mmap_mode="r")  # (N, F) read-only memmap
        print(f"features written: {X.nbytes / GiB:.2f} GiB in {time.perf_counter() - t0:.1f} s")

        teacher = torch.nn.Linear(args.features, args.classes)
        with torch.no_grad():
            g = torch.Generator().manual_seed(1)
            teacher.weight.copy_(torch.randn(args.classes, args.features, generator=g) * 0.5)
            teacher.bias.zero_()

        # phase 1: the streaming pass (teacher forward in blocks, append to .npy, checksums)
        reset_peak()
        t0 = time.perf_counter()
        soft = stream_teacher_logits(teacher, X, cache_dir=scratch / "cache", dtype="float16",
                                     block_rows=args.block_rows, release_every=args.release_every)
        seconds = time.perf_counter() - t0
        size = (soft.folder / "logits.npy").stat().st_size
        rows_out.append(("cache (stream teacher, write, checksum)", seconds, vm_kib("VmHWM")))
        print(f"cache: {size / GiB:.2f} GiB on disk")

        # phase 2: a cache hit, re-verified block by block
        reset_peak()
        t0 = time.perf_counter()
        soft = stream_teacher_logits(teacher, X, cache_dir=scratch / "cache", dtype="float16",
                                     block_rows=args.block_rows, release_every=args.release_every, verify=True)
        rows_out.append(("cache hit (fingerprint + SHA-256 verify)", time.perf_counter() - t0, vm_kib("VmHWM")))

        # phase 3: one distillation epoch, rows gathered from both memmaps
        student = torch.nn.Sequential(torch.nn.Linear(args.features, 128), torch.nn.ReLU(),
                                      torch.nn.Linear(128, args.classes))
        opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
        perm = torch.randperm(args.rows, generator=torch.Generator().manual_seed(0))
        reset_peak()
        t0 = time.perf_counter()
        total, steps = 0.0, 0
        X_map = np.load(scratch / "X.npy", mmap_mode="r")
        for i, idx in enumerate(torch.split(perm, args.batch_size)):  # (B,) rows
            rows = np.sort(idx.numpy())  # sorted gather: sequential reads
            xb = torch.from_numpy(gather_rows(X_map, rows))  # (B, F), read with os.pread
            zb = soft[torch.from_numpy(rows)]  # (B, C) float32 teacher logits
            loss = distillation_loss(student(xb), zb, None, temperature=4.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
        seconds = time.perf_counter() - t0
        rows_out.append(("one distillation epoch (gather + fused loss + SGD)", seconds, vm_kib("VmHWM")))
        print(f"epoch: {steps} steps of {args.batch_size}, mean loss {total / steps:.4f} nats, "
              f"{args.rows / seconds:,.0f} rows/s")

        print()
        print(f"{'phase':<52} {'seconds':>8} {'peak RSS (VmHWM)':>18}")
        for name, sec, kib in rows_out:
            print(f"{name:<52} {sec:8.1f} {kib / 1024:14.0f} MiB")
        worst = max(k for _, _, k in rows_out) * 1024
        print(f"\npeak over all phases: {worst / GiB:.2f} GiB ({'under' if worst < GiB else 'OVER'} 1 GiB); "
              f"data on disk {(size + X.nbytes) / GiB:.2f} GiB")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
