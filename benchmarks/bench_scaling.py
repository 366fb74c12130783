"""Data-parallel throughput: ``fit`` on 1 process and on N gloo processes (DDP), samples per second.

Each configuration runs in fresh processes started with ``torch.multiprocessing.spawn``
(``init_method`` env on 127.0.0.1, gloo on the CPU); every rank uses ``--threads`` intra-op
threads. The global batch size is the same for every world size, so the runs do the same
arithmetic; throughput is training rows per second over the timed epochs (the first epoch is
a warm-up and is not counted). Prints samples/s per world size and the ratio to one process.

    python benchmarks/bench_scaling.py                # 1 and 2 processes
    python benchmarks/bench_scaling.py --world 1 2 4 --rows 50000
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(args.threads)
    from darkknowledge import distributed as D
    from darkknowledge.data._types import Splits
    from darkknowledge.models import build_model
    from darkknowledge.train import fit

    D.init_from_env(device="cpu")
    try:
        g = torch.Generator().manual_seed(0)
        X = torch.randn(args.rows, args.features, generator=g)  # (N, F)
        y = (X[:, : args.classes].argmax(1)).long()  # (N,) a learnable rule
        model = build_model("mlp", input_shape=(args.features,), num_classes=args.classes, seed=0,
                            hidden=[args.hidden, args.hidden])
        result = fit(model, Splits(X, y), epochs=args.epochs, batch_size=args.batch_size, lr=0.05,
                     lr_schedule="constant", progress=False, seed=0)
        if rank == 0:
            timed = result.history[1:]  # epoch 1 is a warm-up
            seconds = sum(h["seconds"] for h in timed)
            Path(out).write_text(f"{len(timed) * args.rows / seconds} {result.history[-1]['loss']}")
    finally:
        D.destroy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--features", type=int, default=64)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    print(f"fit: mlp {args.features}-{args.hidden}-{args.hidden}-{args.classes}, {args.rows:,} rows, "
          f"global batch {args.batch_size}, {args.threads} thread(s) per process, {os.cpu_count()} CPUs")
    base = None
    with tempfile.TemporaryDirectory() as d:
        for world in args.world:
            out = Path(d) / f"w{world}.txt"
            t0 = time.perf_counter()
            mp.spawn(_worker, args=(world, _free_port(), args, str(out)), nprocs=world, join=True)
            rate, loss = map(float, out.read_text().split())
            base = base or rate
            print(f"{world} process(es): {rate:10,.0f} samples/s  (x{rate / base:.2f} of 1 process; "
                  f"final loss {loss:.4f}; {time.perf_counter() - t0:.0f} s wall)")


if __name__ == "__main__":
    main()
