"""Fixtures of the kernel micro-benchmarks: the device (CPU, and CUDA when present) and a
function that makes a benchmarked call wait for the GPU."""

import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture
def bench(benchmark, device):
    """``bench(fn, *args)``: time ``fn(*args)``; on CUDA each call ends with a synchronise, so
    the time is the kernels', not the launch's."""
    benchmark.extra_info["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    benchmark.extra_info["threads"] = torch.get_num_threads()

    def run(fn, *args, **kwargs):
        if device.type == "cuda":
            def call():
                out = fn(*args, **kwargs)
                torch.cuda.synchronize(device)
                return out
        else:
            def call():
                return fn(*args, **kwargs)
        call()  # warm-up (buffers, CUDA context, kernel selection)
        return benchmark(call)

    return run
