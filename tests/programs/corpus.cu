// The kernel corpus of ptx/tests/kernels as one full CUDA program, run through the gpufn stub.
// Each case checks its results against a host computation and prints "<case> ok"; the program
// ends with "corpus ok". A CUDA error prints its name and exits with 2; a wrong result exits
// with 1. Kernels are copied from ptx/tests/kernels (this file includes nothing from there).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#define CHECK(call)                                                                     \
    do {                                                                                \
        cudaError_t err_ = (call);                                                      \
        if (err_ != cudaSuccess) {                                                      \
            std::printf("CUDA error %s (%s) at line %d: %s\n", cudaGetErrorName(err_),  \
                        cudaGetErrorString(err_), __LINE__, #call);                     \
            std::exit(2);                                                               \
        }                                                                               \
    } while (0)

#define EXPECT(cond, ...)                                                               \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            std::printf("wrong result at line %d: ", __LINE__);                        \
            std::printf(__VA_ARGS__);                                                   \
            std::printf("\n");                                                          \
            std::exit(1);                                                               \
        }                                                                               \
    } while (0)

// ---- kernels (from ptx/tests/kernels) ----
__global__ void saxpy(int n, float a, const float* x, float* y) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
        y[i] = a * x[i] + y[i];
}

__device__ int warp_sum(int v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffff, v, o);
    return v;
}
__global__ void reduce_int(const int* in, unsigned long long* out, int n) {
    int s = 0;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) s += in[i];
    s = warp_sum(s);
    if ((threadIdx.x & 31) == 0) atomicAdd(out, (unsigned long long)(long long)s);
}
__global__ void reduce_float(const float* in, float* out, int n) {
    float s = 0.0f;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) s += in[i];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffff, s, o);
    if ((threadIdx.x & 31) == 0) atomicAdd(out, s);
}

__global__ void histogram(const unsigned char* data, int n, unsigned int* bins) {
    __shared__ unsigned int local[256];
    for (int i = threadIdx.x; i < 256; i += blockDim.x) local[i] = 0;
    __syncthreads();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
        atomicAdd(&local[data[i]], 1u);
    __syncthreads();
    for (int i = threadIdx.x; i < 256; i += blockDim.x)
        if (local[i]) atomicAdd(&bins[i], local[i]);
}

#define MM_TILE 16
__global__ void matmul(const float* A, const float* B, float* C, int m, int n, int k) {
    __shared__ float As[MM_TILE][MM_TILE];
    __shared__ float Bs[MM_TILE][MM_TILE];
    int row = blockIdx.y * MM_TILE + threadIdx.y;
    int col = blockIdx.x * MM_TILE + threadIdx.x;
    float acc = 0.0f;
    for (int t = 0; t < (k + MM_TILE - 1) / MM_TILE; ++t) {
        int ac = t * MM_TILE + threadIdx.x;
        int br = t * MM_TILE + threadIdx.y;
        As[threadIdx.y][threadIdx.x] = (row < m && ac < k) ? A[row * k + ac] : 0.0f;
        Bs[threadIdx.y][threadIdx.x] = (br < k && col < n) ? B[br * n + col] : 0.0f;
        __syncthreads();
        for (int i = 0; i < MM_TILE; ++i) acc += As[threadIdx.y][i] * Bs[i][threadIdx.x];
        __syncthreads();
    }
    if (row < m && col < n) C[row * n + col] = acc;
}

#define TR_TILE 32
__global__ void transpose(const float* in, float* out, int rows, int cols) {
    __shared__ float tile[TR_TILE][TR_TILE + 1];
    int x = blockIdx.x * TR_TILE + threadIdx.x;
    int y = blockIdx.y * TR_TILE + threadIdx.y;
    for (int j = 0; j < TR_TILE; j += blockDim.y)
        if (x < cols && y + j < rows) tile[threadIdx.y + j][threadIdx.x] = in[(y + j) * cols + x];
    __syncthreads();
    x = blockIdx.y * TR_TILE + threadIdx.x;
    y = blockIdx.x * TR_TILE + threadIdx.y;
    for (int j = 0; j < TR_TILE; j += blockDim.y)
        if (x < rows && y + j < cols) out[(y + j) * rows + x] = tile[threadIdx.x][threadIdx.y + j];
}

__global__ void inclusive_scan(const int* in, int* out, int n) {
    __shared__ int warp_totals[32];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int v = i < n ? in[i] : 0;
    for (int o = 1; o < 32; o <<= 1) {
        int u = __shfl_up_sync(0xffffffff, v, o);
        if (lane >= o) v += u;
    }
    if (lane == 31) warp_totals[warp] = v;
    __syncthreads();
    if (warp == 0) {
        int t = lane < (blockDim.x >> 5) ? warp_totals[lane] : 0;
        for (int o = 1; o < 32; o <<= 1) {
            int u = __shfl_up_sync(0xffffffff, t, o);
            if (lane >= o) t += u;
        }
        warp_totals[lane] = t;
    }
    __syncthreads();
    if (warp > 0) v += warp_totals[warp - 1];
    if (i < n) out[i] = v;
}

__global__ void reverse_blocks(const int* in, int* out, int* positives) {
    extern __shared__ int buf[];
    int t = threadIdx.x, base = blockIdx.x * blockDim.x;
    int v = in[base + t];
    buf[t] = v;
    int count = __syncthreads_count(v > 0);
    out[base + t] = buf[blockDim.x - 1 - t];
    if (t == 0) positives[blockIdx.x] = count;
}

__constant__ float coeffs[8];
__device__ int calls_made = 7;
__global__ void poly(const float* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float acc = 0.0f;
    for (int k = 7; k >= 0; --k) acc = acc * x[i] + coeffs[k];
    y[i] = acc;
    if (i == 0) atomicAdd(&calls_made, 1);
}

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
__global__ void calls(int* steps, unsigned long long* fibs, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    steps[i] = collatz_steps(i + 1);
    fibs[i] = fib(i % 20);
}

__global__ void softmax(const float* in, float* out, int cols) {
    __shared__ float red[128];
    const float* x = in + blockIdx.x * cols;
    float* y = out + blockIdx.x * cols;
    float m = -INFINITY;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) m = fmaxf(m, x[c]);
    red[threadIdx.x] = m;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) red[threadIdx.x] = fmaxf(red[threadIdx.x], red[threadIdx.x + s]);
        __syncthreads();
    }
    m = red[0];
    __syncthreads();
    float sum = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) sum += expf(x[c] - m);
    red[threadIdx.x] = sum;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
    }
    sum = red[0];
    for (int c = threadIdx.x; c < cols; c += blockDim.x) y[c] = expf(x[c] - m) / sum;
}

__global__ void blur(const unsigned char* in, unsigned char* out, int w, int h) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= w || y >= h) return;
    int sum = 0;
    for (int dy = -1; dy <= 1; ++dy)
        for (int dx = -1; dx <= 1; ++dx) {
            int xx = min(max(x + dx, 0), w - 1);
            int yy = min(max(y + dy, 0), h - 1);
            sum += in[yy * w + xx];
        }
    out[y * w + x] = (unsigned char)(sum / 9);
}

__global__ void half_ops(const float* in, float* back, float* sum, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    __half x = __float2half(in[i]);
    back[i] = __half2float(x);
    sum[i] = __half2float(__hadd(x, __hmul(x, __float2half(0.5f))));
}

// ---- cases ----
template <typename T> T* device_copy(const std::vector<T>& host) {
    T* d = nullptr;
    CHECK(cudaMalloc(&d, host.size() * sizeof(T)));
    CHECK(cudaMemcpy(d, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}
template <typename T> std::vector<T> host_copy(const T* d, size_t n) {
    std::vector<T> host(n);
    CHECK(cudaMemcpy(host.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
}

// saxpy on a stream: async copies, events and elapsed time.
static void case_saxpy() {
    const int n = 1 << 16;
    std::vector<float> x(n), y(n);
    for (int i = 0; i < n; i++) { x[i] = i * 0.5f; y[i] = 1.0f; }
    cudaStream_t stream;
    CHECK(cudaStreamCreate(&stream));
    cudaEvent_t start, stop;
    CHECK(cudaEventCreate(&start));
    CHECK(cudaEventCreate(&stop));
    float *dx, *dy;
    CHECK(cudaMalloc(&dx, n * sizeof(float)));
    CHECK(cudaMalloc(&dy, n * sizeof(float)));
    CHECK(cudaEventRecord(start, stream));
    CHECK(cudaMemcpyAsync(dx, x.data(), n * sizeof(float), cudaMemcpyHostToDevice, stream));
    CHECK(cudaMemcpyAsync(dy, y.data(), n * sizeof(float), cudaMemcpyHostToDevice, stream));
    saxpy<<<64, 256, 0, stream>>>(n, 3.0f, dx, dy);
    CHECK(cudaGetLastError());
    // Into pinned memory the copy is truly asynchronous: the result is there after the sync.
    float* pinned;
    CHECK(cudaMallocHost(&pinned, n * sizeof(float)));
    CHECK(cudaMemcpyAsync(pinned, dy, n * sizeof(float), cudaMemcpyDeviceToHost, stream));
    CHECK(cudaEventRecord(stop, stream));
    CHECK(cudaStreamSynchronize(stream));
    std::memcpy(y.data(), pinned, n * sizeof(float));
    CHECK(cudaFreeHost(pinned));
    CHECK(cudaEventSynchronize(stop));
    float ms = -1.0f;
    CHECK(cudaEventElapsedTime(&ms, start, stop));
    EXPECT(ms >= 0.0f, "elapsed time %f", ms);
    CHECK(cudaStreamQuery(stream));
    CHECK(cudaEventQuery(stop));
    for (int i = 0; i < n; i++) EXPECT(y[i] == 3.0f * (i * 0.5f) + 1.0f, "saxpy[%d] = %f", i, y[i]);
    CHECK(cudaFree(dx));
    CHECK(cudaFree(dy));
    CHECK(cudaEventDestroy(start));
    CHECK(cudaEventDestroy(stop));
    CHECK(cudaStreamDestroy(stream));
    std::printf("saxpy ok (%.3f ms)\n", ms);
}

// Reductions: cudaMemset clears the accumulators.
static void case_reduce() {
    const int n = 100000;
    std::vector<int> in(n);
    std::vector<float> fin(n);
    long long expect = 0;
    double fexpect = 0;
    for (int i = 0; i < n; i++) { in[i] = (i % 17) - 8; expect += in[i]; fin[i] = (i % 10) * 0.25f; fexpect += fin[i]; }
    int* din = device_copy(in);
    float* dfin = device_copy(fin);
    unsigned long long* dout;
    float* dfout;
    CHECK(cudaMalloc(&dout, sizeof(unsigned long long)));
    CHECK(cudaMalloc(&dfout, sizeof(float)));
    CHECK(cudaMemset(dout, 0xff, sizeof(unsigned long long)));
    CHECK(cudaMemset(dout, 0, sizeof(unsigned long long)));
    CHECK(cudaMemset(dfout, 0, sizeof(float)));
    reduce_int<<<32, 256>>>(din, dout, n);
    reduce_float<<<32, 256>>>(dfin, dfout, n);
    CHECK(cudaDeviceSynchronize());
    long long got = (long long)host_copy(dout, 1)[0];
    float fgot = host_copy(dfout, 1)[0];
    EXPECT(got == expect, "sum %lld, expected %lld", got, expect);
    EXPECT(std::fabs(fgot - fexpect) < 1e-3 * fexpect, "float sum %f, expected %f", fgot, fexpect);
    CHECK(cudaFree(din)); CHECK(cudaFree(dfin)); CHECK(cudaFree(dout)); CHECK(cudaFree(dfout));
    std::printf("reduce ok\n");
}

// Histogram with pinned host memory (cudaMallocHost).
static void case_histogram() {
    const int n = 50000;
    unsigned char* data;
    CHECK(cudaMallocHost(&data, n));
    std::vector<unsigned> expect(256, 0);
    for (int i = 0; i < n; i++) { data[i] = (unsigned char)((i * 7919) % 251); expect[data[i]]++; }
    unsigned char* ddata;
    unsigned* dbins;
    CHECK(cudaMalloc(&ddata, n));
    CHECK(cudaMalloc(&dbins, 256 * sizeof(unsigned)));
    CHECK(cudaMemset(dbins, 0, 256 * sizeof(unsigned)));
    CHECK(cudaMemcpy(ddata, data, n, cudaMemcpyHostToDevice));
    histogram<<<16, 128>>>(ddata, n, dbins);
    std::vector<unsigned> bins = host_copy(dbins, 256);
    for (int b = 0; b < 256; b++) EXPECT(bins[b] == expect[b], "bin %d = %u, expected %u", b, bins[b], expect[b]);
    CHECK(cudaFreeHost(data));
    CHECK(cudaFree(ddata)); CHECK(cudaFree(dbins));
    std::printf("histogram ok\n");
}

static void case_matmul() {
    const int m = 37, n = 45, k = 29;
    std::vector<float> A(m * k), B(k * n);
    for (int i = 0; i < m * k; i++) A[i] = (i % 7) - 3;
    for (int i = 0; i < k * n; i++) B[i] = (i % 5) - 2;
    float *dA = device_copy(A), *dB = device_copy(B), *dC;
    CHECK(cudaMalloc(&dC, m * n * sizeof(float)));
    dim3 block(MM_TILE, MM_TILE), grid((n + MM_TILE - 1) / MM_TILE, (m + MM_TILE - 1) / MM_TILE);
    matmul<<<grid, block>>>(dA, dB, dC, m, n, k);
    std::vector<float> C = host_copy(dC, m * n);
    for (int r = 0; r < m; r++)
        for (int c = 0; c < n; c++) {
            float acc = 0;
            for (int i = 0; i < k; i++) acc += A[r * k + i] * B[i * n + c];
            EXPECT(C[r * n + c] == acc, "C[%d][%d] = %f, expected %f", r, c, C[r * n + c], acc);
        }
    CHECK(cudaFree(dA)); CHECK(cudaFree(dB)); CHECK(cudaFree(dC));
    std::printf("matmul ok\n");
}

static void case_transpose() {
    const int rows = 70, cols = 45;
    std::vector<float> in(rows * cols);
    for (int i = 0; i < rows * cols; i++) in[i] = i;
    float *din = device_copy(in), *dout;
    CHECK(cudaMalloc(&dout, rows * cols * sizeof(float)));
    transpose<<<dim3((cols + 31) / 32, (rows + 31) / 32), dim3(32, 8)>>>(din, dout, rows, cols);
    std::vector<float> out = host_copy(dout, rows * cols);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            EXPECT(out[c * rows + r] == in[r * cols + c], "out[%d][%d]", c, r);
    CHECK(cudaFree(din)); CHECK(cudaFree(dout));
    std::printf("transpose ok\n");
}

static void case_scan_and_reverse() {
    const int n = 1024;
    std::vector<int> in(n);
    for (int i = 0; i < n; i++) in[i] = (i % 9) - 4;
    int *din = device_copy(in), *dout, *dpos;
    CHECK(cudaMalloc(&dout, n * sizeof(int)));
    CHECK(cudaMalloc(&dpos, 4 * sizeof(int)));
    inclusive_scan<<<4, 256>>>(din, dout, n);
    std::vector<int> out = host_copy(dout, n);
    for (int b = 0; b < 4; b++) {
        int acc = 0;
        for (int i = 0; i < 256; i++) {
            acc += in[b * 256 + i];
            EXPECT(out[b * 256 + i] == acc, "scan[%d] = %d, expected %d", b * 256 + i, out[b * 256 + i], acc);
        }
    }
    reverse_blocks<<<4, 256, 256 * sizeof(int)>>>(din, dout, dpos);
    out = host_copy(dout, n);
    std::vector<int> pos = host_copy(dpos, 4);
    for (int b = 0; b < 4; b++) {
        int positives = 0;
        for (int i = 0; i < 256; i++) {
            EXPECT(out[b * 256 + i] == in[b * 256 + 255 - i], "reverse[%d]", b * 256 + i);
            positives += in[b * 256 + i] > 0;
        }
        EXPECT(pos[b] == positives, "positives[%d] = %d, expected %d", b, pos[b], positives);
    }
    CHECK(cudaFree(din)); CHECK(cudaFree(dout)); CHECK(cudaFree(dpos));
    std::printf("scan ok\n");
}

// __constant__ and __device__ variables through cudaMemcpyToSymbol / FromSymbol.
static void case_constant() {
    const int n = 300;
    float c[8] = {1, -2, 0.5f, 0.25f, 0, 0, 0, 0.125f};
    CHECK(cudaMemcpyToSymbol(coeffs, c, sizeof(c)));
    int before = 0;
    CHECK(cudaMemcpyFromSymbol(&before, calls_made, sizeof(int)));
    EXPECT(before == 7, "calls_made starts at %d", before);
    std::vector<float> x(n);
    for (int i = 0; i < n; i++) x[i] = (i - 150) / 100.0f;
    float *dx = device_copy(x), *dy;
    CHECK(cudaMalloc(&dy, n * sizeof(float)));
    poly<<<(n + 127) / 128, 128>>>(dx, dy, n);
    std::vector<float> y = host_copy(dy, n);
    for (int i = 0; i < n; i++) {
        float acc = 0;
        for (int k = 7; k >= 0; --k) acc = acc * x[i] + c[k];
        EXPECT(std::fabs(y[i] - acc) <= 1e-5f * (1 + std::fabs(acc)), "poly(%f) = %f, expected %f", x[i], y[i], acc);
    }
    int after = 0;
    CHECK(cudaMemcpyFromSymbol(&after, calls_made, sizeof(int)));
    EXPECT(after == 8, "calls_made ends at %d", after);
    CHECK(cudaFree(dx)); CHECK(cudaFree(dy));
    std::printf("constant ok\n");
}

static void case_calls() {
    const int n = 64;
    int* dsteps;
    unsigned long long* dfibs;
    CHECK(cudaMalloc(&dsteps, n * sizeof(int)));
    CHECK(cudaMalloc(&dfibs, n * sizeof(unsigned long long)));
    calls<<<2, 32>>>(dsteps, dfibs, n);
    std::vector<int> steps = host_copy(dsteps, n);
    std::vector<unsigned long long> fibs = host_copy(dfibs, n);
    for (int i = 0; i < n; i++) {
        long long x = i + 1;
        int s = 0;
        while (x != 1) { x = (x & 1) ? 3 * x + 1 : x / 2; ++s; }
        unsigned long long a = 0, b = 1;
        for (int k = 0; k < i % 20; k++) { unsigned long long t = a + b; a = b; b = t; }
        EXPECT(steps[i] == s, "collatz(%d) = %d, expected %d", i + 1, steps[i], s);
        EXPECT(fibs[i] == a, "fib(%d) = %llu, expected %llu", i % 20, fibs[i], a);
    }
    CHECK(cudaFree(dsteps)); CHECK(cudaFree(dfibs));
    std::printf("calls ok\n");
}

static void case_softmax_blur_half() {
    const int rows = 5, cols = 300;
    std::vector<float> in(rows * cols);
    for (int i = 0; i < rows * cols; i++) in[i] = std::sin(i * 0.1f) * 3;
    float *din = device_copy(in), *dout;
    CHECK(cudaMalloc(&dout, rows * cols * sizeof(float)));
    softmax<<<rows, 128>>>(din, dout, cols);
    std::vector<float> out = host_copy(dout, rows * cols);
    for (int r = 0; r < rows; r++) {
        float total = 0;
        for (int c = 0; c < cols; c++) total += out[r * cols + c];
        EXPECT(std::fabs(total - 1.0f) < 1e-4f, "softmax row %d sums to %f", r, total);
    }
    std::printf("softmax ok\n");

    const int w = 40, h = 30;
    std::vector<unsigned char> img(w * h);
    for (int i = 0; i < w * h; i++) img[i] = (unsigned char)((i * 37) % 256);
    unsigned char *dimg = device_copy(img), *dblur;
    CHECK(cudaMalloc(&dblur, w * h));
    blur<<<dim3((w + 15) / 16, (h + 15) / 16), dim3(16, 16)>>>(dimg, dblur, w, h);
    std::vector<unsigned char> blurred = host_copy(dblur, w * h);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int sum = 0;
            for (int dy = -1; dy <= 1; ++dy)
                for (int dx = -1; dx <= 1; ++dx) {
                    int xx = std::min(std::max(x + dx, 0), w - 1), yy = std::min(std::max(y + dy, 0), h - 1);
                    sum += img[yy * w + xx];
                }
            EXPECT(blurred[y * w + x] == sum / 9, "blur(%d,%d)", x, y);
        }
    std::printf("blur ok\n");

    const int n = 100;
    std::vector<float> hin(n);
    for (int i = 0; i < n; i++) hin[i] = i * 0.25f;
    float *dhin = device_copy(hin), *dback, *dsum;
    CHECK(cudaMalloc(&dback, n * sizeof(float)));
    CHECK(cudaMalloc(&dsum, n * sizeof(float)));
    half_ops<<<1, 128>>>(dhin, dback, dsum, n);
    std::vector<float> back = host_copy(dback, n), sum = host_copy(dsum, n);
    for (int i = 0; i < n; i++) {
        EXPECT(back[i] == hin[i], "half(%f) = %f", hin[i], back[i]);
        EXPECT(std::fabs(sum[i] - 1.5f * hin[i]) <= 0.02f * (1 + hin[i]), "half sum %f", sum[i]);
    }
    CHECK(cudaFree(din)); CHECK(cudaFree(dout)); CHECK(cudaFree(dimg)); CHECK(cudaFree(dblur));
    CHECK(cudaFree(dhin)); CHECK(cudaFree(dback)); CHECK(cudaFree(dsum));
    std::printf("half ok\n");
}

// Pitched allocations and 2D copies in every direction (cudaMallocPitch, cudaMemcpy2D,
// cudaMemset2D).
static void case_memcpy_2d() {
    const int w = 37, h = 11;
    std::vector<int> host(w * h), back(w * h, 0);
    for (int i = 0; i < w * h; i++) host[i] = i * 5 + 1;
    int *a, *b;
    size_t pa = 0, pb = 0;
    CHECK(cudaMallocPitch((void**)&a, &pa, w * sizeof(int), h));
    CHECK(cudaMallocPitch((void**)&b, &pb, w * sizeof(int), h));
    EXPECT(pa >= w * sizeof(int), "pitch %zu", pa);
    CHECK(cudaMemset2D(b, pb, 0, w * sizeof(int), h));
    CHECK(cudaMemcpy2D(a, pa, host.data(), w * sizeof(int), w * sizeof(int), h, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy2D(b, pb, a, pa, w * sizeof(int), h, cudaMemcpyDeviceToDevice));
    CHECK(cudaMemcpy2D(back.data(), w * sizeof(int), b, pb, w * sizeof(int), h, cudaMemcpyDeviceToHost));
    for (int i = 0; i < w * h; i++) EXPECT(back[i] == host[i], "2D copy [%d] = %d", i, back[i]);
    CHECK(cudaFree(a)); CHECK(cudaFree(b));
    std::printf("memcpy2d ok\n");
}

// cudaDeviceReset frees everything; the runtime then starts over in a fresh context.
static void case_reset() {
    float* before;
    CHECK(cudaMalloc(&before, 1 << 20));
    CHECK(cudaDeviceReset());
    size_t free_bytes = 0, total = 0;
    CHECK(cudaMemGetInfo(&free_bytes, &total));
    // The 1 MiB allocation is gone (module variables may remain).
    EXPECT(free_bytes > total - (1 << 20), "after reset %zu of %zu bytes free", free_bytes, total);
    const int n = 1000;
    std::vector<float> x(n, 2.0f), y(n, 1.0f);
    float *dx = device_copy(x), *dy = device_copy(y);
    saxpy<<<4, 128>>>(n, 0.5f, dx, dy);
    std::vector<float> out = host_copy(dy, n);
    for (int i = 0; i < n; i++) EXPECT(out[i] == 2.0f, "after reset y[%d] = %f", i, out[i]);
    CHECK(cudaFree(dx)); CHECK(cudaFree(dy));
    std::printf("reset ok\n");
}

int main() {
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device %s, %d SMs, warp %d\n", prop.name, prop.multiProcessorCount, prop.warpSize);
    EXPECT(prop.warpSize == 32, "warp size %d", prop.warpSize);
    size_t free_bytes = 0, total_bytes = 0;
    CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    EXPECT(total_bytes > 0 && free_bytes <= total_bytes, "memory %zu of %zu", free_bytes, total_bytes);
    case_saxpy();
    case_reduce();
    case_histogram();
    case_matmul();
    case_transpose();
    case_scan_and_reverse();
    case_constant();
    case_calls();
    case_softmax_blur_half();
    case_memcpy_2d();
    case_reset();
    CHECK(cudaDeviceSynchronize());
    std::printf("corpus ok\n");
    return 0;
}
