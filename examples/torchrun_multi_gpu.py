"""Fit one GaussianMixture on several GPUs (or CPU processes) with torchrun.

Every process holds only its own shard of the data; ``fit`` notices the process group,
initialises every rank from the same sample of all the shards, and sums the sufficient
statistics over the ranks at every EM iteration, so all ranks end with the same parameters:
those of a single-process fit on the concatenated data.

    # 4 GPUs on one machine (NCCL), 10M samples per GPU generated on the device:
    torchrun --nproc_per_node=4 examples/torchrun_multi_gpu.py --n-per-rank 10000000 --n-features 64 --n-components 64

    # shards of one .npy file (each rank memory-maps its block of rows and streams it):
    torchrun --nproc_per_node=4 examples/torchrun_multi_gpu.py --data X.npy --n-components 64

    # two CPU processes (gloo), e.g. to try it without a GPU:
    torchrun --nproc_per_node=2 examples/torchrun_multi_gpu.py --device cpu --n-per-rank 100000

On several machines, run the same command on each with ``--nnodes``, ``--node_rank`` and
``--rdzv_endpoint`` (see the torchrun documentation).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.distributed as dist

from torchem import GaussianMixture


def shard(args, rank: int, world: int, device: torch.device):
    """This rank's data: a block of rows of ``--data`` (memory-mapped, streamed by fit), or
    generated mixture data."""
    if args.data:
        X = np.load(args.data, mmap_mode="r")
        rows = np.array_split(np.arange(len(X)), world)[rank]
        return X[rows[0] : rows[-1] + 1] if len(rows) else X[:0]
    g = torch.Generator(device=device).manual_seed(1000 + rank)
    centres = torch.randn(args.n_components, args.n_features, generator=torch.Generator(device=device).manual_seed(0), device=device) * 4
    labels = torch.randint(0, args.n_components, (args.n_per_rank,), generator=g, device=device)
    return centres[labels] + torch.randn(args.n_per_rank, args.n_features, generator=g, device=device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="a .npy file of [N, D] samples, split into one block of rows per rank")
    p.add_argument("--n-per-rank", type=int, default=1_000_000)
    p.add_argument("--n-features", type=int, default=64)
    p.add_argument("--n-components", type=int, default=64)
    p.add_argument("--covariance-type", default="diag")
    p.add_argument("--max-iter", type=int, default=20)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if args.device == "cuda":
        torch.cuda.set_device(local_rank)  # NCCL (and all_gather_object) use the current device
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    X = shard(args, rank, world, device)
    model = GaussianMixture(args.n_components, covariance_type=args.covariance_type, max_iter=args.max_iter,
                            random_state=0, verbose=1).to(device)
    start = time.perf_counter()
    model.fit(X)
    seconds = time.perf_counter() - start

    # every rank holds the same parameters: compare a checksum
    # (means_ is a tensor on the device for tensor input, a numpy array for numpy or memmap input)
    check = torch.as_tensor(model.means_).to(device=device, dtype=torch.float64).sum().reshape(1)
    sums = [torch.zeros_like(check) for _ in range(world)]
    dist.all_gather(sums, check)
    if rank == 0:
        n_total = len(X) * world if not args.data else len(np.load(args.data, mmap_mode="r"))
        print(f"{world} ranks, {n_total:,} samples: {model.n_iter_} iterations in {seconds:.1f}s, "
              f"lower bound {model.lower_bound_:.6f}, identical on every rank: "
              f"{all(bool(s == sums[0]) for s in sums)}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
