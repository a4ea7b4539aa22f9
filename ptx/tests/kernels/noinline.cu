// Calls into non-inlined device functions, including a recursive one.
__device__ __noinline__ int collatz_steps(long long x) {
    int steps = 0;
    while (x != 1) {
        x = (x & 1) ? 3 * x + 1 : x / 2;
        ++steps;
    }
    return steps;
}
__device__ __noinline__ unsigned long long fib(int n) {
    return n < 2 ? (unsigned long long)n : fib(n - 1) + fib(n - 2);
}
__device__ __noinline__ float2 scale(float2 v, float s) { return make_float2(v.x * s, v.y * s); }
extern "C" __global__ void calls(int* steps, unsigned long long* fibs, float2* vecs, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    steps[i] = collatz_steps(i + 1);
    fibs[i] = fib(i % 20);
    vecs[i] = scale(vecs[i], 2.0f);
}
// Per-thread array indexed dynamically (lives in local memory), sorted by insertion sort.
extern "C" __global__ void local_sort(const int* in, int* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int a[12];
    for (int k = 0; k < 12; ++k) a[k] = in[i * 12 + k];
    for (int k = 1; k < 12; ++k) {
        int v = a[k], j = k - 1;
        while (j >= 0 && a[j] > v) { a[j + 1] = a[j]; --j; }
        a[j + 1] = v;
    }
    for (int k = 0; k < 12; ++k) out[i * 12 + k] = a[k];
}
