"""Numba CUDA kernels run through gpufn's stub; each checks its result against NumPy.

Run as `gpufn run -- python numba_kernels.py`. Prints one line per check and
"numba ok" at the end; any wrong result raises.
"""

import math

import numpy as np
from numba import cuda, float32, int32

THREADS = 128


@cuda.jit
def saxpy(a, x, y, out):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a * x[i] + y[i]


@cuda.jit
def block_sums(values, sums):
    # Shared memory and barriers: one partial sum per block.
    partial = cuda.shared.array(THREADS, dtype=float32)
    tid = cuda.threadIdx.x
    i = cuda.grid(1)
    partial[tid] = values[i] if i < values.size else 0.0
    cuda.syncthreads()
    step = THREADS // 2
    while step > 0:
        if tid < step:
            partial[tid] += partial[tid + step]
        cuda.syncthreads()
        step //= 2
    if tid == 0:
        sums[cuda.blockIdx.x] = partial[0]


@cuda.jit
def histogram(values, bins):
    # Atomics from every thread into a few counters.
    i = cuda.grid(1)
    if i < values.size:
        cuda.atomic.add(bins, values[i] % bins.size, 1)


@cuda.jit
def transpose(src, dst):
    # A 2D grid.
    x, y = cuda.grid(2)
    if x < src.shape[0] and y < src.shape[1]:
        dst[y, x] = src[x, y]


@cuda.jit
def sines(x, out):
    # Math functions from libdevice.
    i = cuda.grid(1)
    if i < out.size:
        out[i] = math.sin(x[i]) * math.exp(-x[i])


def blocks(n):
    return (n + THREADS - 1) // THREADS


def check(name, got, want):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    print(f"{name} ok")


def main():
    device = cuda.get_current_device()
    print("device:", device.name)
    rng = np.random.default_rng(7)
    n = 10_000

    x = rng.random(n, dtype=np.float32)
    y = rng.random(n, dtype=np.float32)
    out = cuda.device_array(n, dtype=np.float32)
    saxpy[blocks(n), THREADS](np.float32(2.5), cuda.to_device(x), cuda.to_device(y), out)
    check("saxpy", out.copy_to_host(), 2.5 * x + y)

    sums = cuda.device_array(blocks(n), dtype=np.float32)
    block_sums[blocks(n), THREADS](cuda.to_device(x), sums)
    want = np.add.reduceat(x, np.arange(0, n, THREADS))
    check("block_sums", sums.copy_to_host(), want)

    values = rng.integers(0, 1000, n, dtype=np.int32)
    bins = cuda.to_device(np.zeros(16, dtype=np.int32))
    histogram[blocks(n), THREADS](cuda.to_device(values), bins)
    check("histogram", bins.copy_to_host(), np.bincount(values % 16, minlength=16))

    matrix = rng.random((37, 53), dtype=np.float32)
    transposed = cuda.device_array((53, 37), dtype=np.float32)
    transpose[(3, 4), (16, 16)](cuda.to_device(matrix), transposed)
    check("transpose", transposed.copy_to_host(), matrix.T)

    stream = cuda.stream()
    d_x = cuda.to_device(x, stream=stream)
    d_out = cuda.device_array(n, dtype=np.float32, stream=stream)
    start, end = cuda.event(), cuda.event()
    start.record(stream)
    sines[blocks(n), THREADS, stream](d_x, d_out)
    end.record(stream)
    end.synchronize()
    assert cuda.event_elapsed_time(start, end) >= 0
    check("sines on a stream", d_out.copy_to_host(stream=stream), np.sin(x) * np.exp(-x))

    free, total = cuda.current_context().get_memory_info()
    assert 0 < free <= total, (free, total)
    print("numba ok")


if __name__ == "__main__":
    main()
