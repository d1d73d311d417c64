"""Command line (``torchem`` or ``python -m torchem``):

    torchem demo                       # a GaussianMixture on a million generated points (CUDA when present)
    torchem demo --device cpu --n 200000 --k 4
    torchem bench --quick              # every model on CPU/CUDA vs scikit-learn, faiss, pomegranate
    torchem fit data.csv --model gmm -k 4 --out gm.pt
    torchem predict gm.pt data.csv --out labels.npy
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch

from . import __version__
from .bench import _run as bench_run
from ._cli import _device, _guarded, add_fit_parser, add_predict_parser, add_select_parser
from .functional.estep import mixture_log_prob
from .functional.gaussian import COVARIANCE_TYPES, gaussian_log_prob, precision_cholesky_from_covariances
from .mixture import GaussianMixture


def _true_mixture(k: int, d: int, generator: torch.Generator, device, dtype):
    """A well-separated mixture: random means, random full covariances, random weights."""
    means = torch.randn(k, d, generator=generator, dtype=torch.float64) * 4.0
    a = torch.randn(k, d, d, generator=generator, dtype=torch.float64) / math.sqrt(d)
    covariances = a @ a.mT + 0.3 * torch.eye(d, dtype=torch.float64)
    weights = torch.rand(k, generator=generator, dtype=torch.float64) + 0.5
    weights = weights / weights.sum()
    return means.to(device), covariances.to(device), weights.to(device)


def _sample(means, covariances, weights, n, generator, dtype):
    device = means.device
    labels = torch.multinomial(weights.cpu(), n, replacement=True, generator=generator).to(device)
    chol = torch.linalg.cholesky(covariances)
    z = torch.randn(n, means.shape[1], generator=generator, dtype=torch.float64).to(device)
    X = means[labels] + (chol[labels] @ z.unsqueeze(-1)).squeeze(-1)
    return X.to(dtype)


def demo(args) -> int:
    device = _device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))  # clear error for bad devices
    dtype = torch.float64 if args.double else torch.float32
    gen = torch.Generator().manual_seed(args.seed)
    means, covariances, weights = _true_mixture(args.k, args.d, gen, device, dtype)
    X = _sample(means, covariances, weights, args.n, gen, dtype)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"torchem {__version__} demo: {args.n:,} points, D={args.d}, K={args.k}, {str(dtype)[6:]}, on {where}")

    model = GaussianMixture(args.k, covariance_type=args.covariance_type, random_state=args.seed, max_iter=args.max_iter)
    model.to(device)
    if device.type == "cuda":
        model.fit(X[: min(len(X), 10_000)])  # warm-up: CUDA context and kernels
        torch.cuda.synchronize()
    start = time.perf_counter()
    model.fit(X)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start

    true_prec_chol, _ = precision_cholesky_from_covariances(covariances, "full")
    true_ll = mixture_log_prob(gaussian_log_prob(X.double(), means, true_prec_chol, "full"), weights.log()).mean()
    fitted_ll = model.score(X)
    print(f"fit time          {elapsed:.2f} s  ({model.n_iter_} EM iterations, converged={model.converged_})")
    print(f"mean log-lik      fitted {float(fitted_ll):.5f}   true model {float(true_ll):.5f}")
    order = torch.argsort(model.weights_.cpu())
    print(f"weights (sorted)  fitted {[round(w, 3) for w in model.weights_.cpu()[order].tolist()]}")
    print(f"                  true   {[round(w, 3) for w in weights.cpu().sort().values.tolist()]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchem", description="Mixture models fitted by EM as stacked torch kernels.")
    parser.add_argument("--version", action="version", version=f"torchem {__version__}")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("demo", help="fit a GaussianMixture to points drawn from a known mixture")
    p.add_argument("--n", type=int, default=1_000_000, help="number of points (default 1,000,000)")
    p.add_argument("--d", type=int, default=8, help="number of features (default 8)")
    p.add_argument("--k", type=int, default=8, help="number of components (default 8)")
    p.add_argument("--covariance-type", default="full", choices=list(COVARIANCE_TYPES))
    p.add_argument("--max-iter", type=int, default=100)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--double", action="store_true", help="fit in float64 instead of float32")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_guarded(demo))
    b = sub.add_parser("bench", parents=[bench_run.build_parser(add_help=False)], help="benchmark every model on "
                       "CPU and CUDA against scikit-learn, faiss and pomegranate", description=bench_run.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    b.set_defaults(func=bench_run.run_from_args)
    add_fit_parser(sub)
    add_predict_parser(sub)
    add_select_parser(sub)
    return parser


def _run(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `torchem`: the help on stdout, status 0 (as pip, cargo, docker)
        parser.print_help()
        return 0
    args.argv = argv[1:] if argv is not None else None
    return args.func(args)


def main(argv=None) -> int:
    # Output piped into a reader that stops early (| head): Python ignores SIGPIPE, so the
    # next write raises BrokenPipeError. As the signal module's docs advise, flush inside the
    # try (else the error surfaces at interpreter exit), then point stdout at devnull so the
    # exit-time flush of what is still buffered cannot fail again. The reader asked for no
    # more, so this is a success: status 0, nothing on stderr.
    try:
        try:
            status = _run(argv)
        finally:
            sys.stdout.flush()  # for --help and --version (SystemExit) too
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return status


if __name__ == "__main__":
    sys.exit(main())
