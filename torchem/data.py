"""Chunk sources: where the EM driver reads its samples from.

A source yields the data in chunks of samples, always shaped ``[B, n, D]`` (``B`` independent
problems) on the compute device in the compute dtype, so the driver's peak memory is set by
the chunk size rather than by the number of samples.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["TensorSource", "auto_chunk_size"]

# Bytes of per-chunk working memory the driver aims for when no chunk size is given.
_CPU_BUDGET = 16 * 2**20
_MIN_CHUNK = 256


def auto_chunk_size(bytes_per_sample: int, device: torch.device, n_samples: int) -> int:
    """A chunk length whose working memory fits a budget: 16 MiB on CPU (chunks that stay
    in the caches are fastest there: measured on the Gaussian full-covariance E+M pass), and an eighth of the free memory, at most 2 GiB, on
    CUDA."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = min(free // 8, 2 * 2**30)
    else:
        budget = _CPU_BUDGET
    size = max(_MIN_CHUNK, int(budget // max(1, bytes_per_sample)))
    return int(min(size, n_samples))


class TensorSource:
    """In-memory data: a ``[B, N, D]`` tensor (optionally with ``[B, N]`` sample weights).

    Data on another device than the compute device is moved there once, in the compute dtype.
    """

    def __init__(
        self,
        X: Tensor,
        *,
        device: torch.device,
        dtype: torch.dtype,
        sample_weight: Tensor | None = None,
    ):
        if X.ndim == 2:
            X = X.unsqueeze(0)
        self.X = X.to(device=device, dtype=dtype)
        self.sample_weight = None
        if sample_weight is not None:
            if sample_weight.ndim == 1:
                sample_weight = sample_weight.unsqueeze(0)
            self.sample_weight = sample_weight.to(device=device, dtype=dtype).expand(self.X.shape[0], -1)
        self.device = torch.device(device)
        self.dtype = dtype
        self.chunk_size = self.X.shape[1]

    @property
    def batch_size(self) -> int:
        return self.X.shape[0]

    @property
    def n_samples(self) -> int:
        return self.X.shape[1]

    @property
    def n_features(self) -> int:
        return self.X.shape[2]

    def total_weight(self) -> Tensor:
        """``[B]`` float64: the number of samples, or the sum of the sample weights."""
        if self.sample_weight is None:
            return torch.full((self.batch_size,), float(self.n_samples), dtype=torch.float64, device=self.device)
        return self.sample_weight.double().sum(-1)

    def chunks(self) -> Iterator[tuple[int, Tensor, Tensor | None]]:
        """Yield ``(start, X[:, start:start+n], weight or None)`` over the whole data."""
        step = self.chunk_size
        for start in range(0, self.n_samples, step):
            w = None if self.sample_weight is None else self.sample_weight[:, start : start + step]
            yield start, self.X[:, start : start + step], w
