"""CuPy through gpufn's stub; each check compares with NumPy.

Run as `gpufn run -- python cupy_kernels.py`. Prints one line per check and "cupy ok" at
the end; any wrong result raises. `gpufn run` sets CUPY_COMPILE_WITH_PTX=1, so CuPy sends
PTX, which every worker can run.
"""

import cupy as cp
import numpy as np


def check(name, got, want):
    np.testing.assert_allclose(cp.asnumpy(got), want, rtol=1e-5)
    print(f"{name} ok")


def main():
    rng = np.random.default_rng(3)
    x = rng.random(50_000, dtype=np.float32)
    y = rng.random(50_000, dtype=np.float32)
    dx, dy = cp.asarray(x), cp.asarray(y)

    check("elementwise", dx * 2 + dy, x * 2 + y)
    check("reduction (CUB)", dx.sum(), x.sum(dtype=np.float64))
    check("cumsum", cp.cumsum(dx[:1000]), np.cumsum(x[:1000]))
    check("argmax", cp.argmax(dx), np.argmax(x))

    fma = cp.ElementwiseKernel("float32 a, float32 b", "float32 c", "c = a * b + 1", "fma1")
    check("ElementwiseKernel", fma(dx, dy), x * y + 1)

    twice = cp.RawKernel(
        r"""
        extern "C" __global__ void twice(const float* x, float* y, int n) {
            int i = blockDim.x * blockIdx.x + threadIdx.x;
            if (i < n) y[i] = 2 * x[i];
        }
        """,
        "twice",
    )
    out = cp.empty_like(dx)
    twice(((x.size + 255) // 256,), (256,), (dx, out, cp.int32(x.size)))
    check("RawKernel", out, 2 * x)

    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        sq = dx * dx
    stream.synchronize()
    check("stream", sq, x * x)
    print("cupy ok")


if __name__ == "__main__":
    main()
