// Vector add with a result check: the smallest complete CUDA program (allocate, copy in,
// launch, copy out, free). Exit codes: 0 = result correct, 2 = a CUDA call failed (its error
// name is printed), 3 = the kernel computed a wrong result.
#include <cstdio>
#include <cstdlib>

#define CHECK(call)                                                                  \
    do {                                                                             \
        cudaError_t err_ = (call);                                                   \
        if (err_ != cudaSuccess) {                                                   \
            std::fprintf(stderr, "hello: %s failed: %s: %s\n", #call,                \
                         cudaGetErrorName(err_), cudaGetErrorString(err_));          \
            std::exit(2);                                                            \
        }                                                                            \
    } while (0)

__global__ void vector_add(const float *a, const float *b, float *sum, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        sum[i] = a[i] + b[i];
    }
}

int main() {
    const int n = 1000;  // not a multiple of the block size, so the bounds check matters
    const size_t bytes = n * sizeof(float);
    float a[n], b[n], sum[n];
    for (int i = 0; i < n; ++i) {
        a[i] = static_cast<float>(i);
        b[i] = static_cast<float>(2 * i);
        sum[i] = -1.0f;
    }

    float *d_a = nullptr, *d_b = nullptr, *d_sum = nullptr;
    CHECK(cudaMalloc(&d_a, bytes));
    CHECK(cudaMalloc(&d_b, bytes));
    CHECK(cudaMalloc(&d_sum, bytes));
    CHECK(cudaMemcpy(d_a, a, bytes, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(d_b, b, bytes, cudaMemcpyHostToDevice));

    const int block = 256;
    vector_add<<<(n + block - 1) / block, block>>>(d_a, d_b, d_sum, n);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(sum, d_sum, bytes, cudaMemcpyDeviceToHost));

    CHECK(cudaFree(d_a));
    CHECK(cudaFree(d_b));
    CHECK(cudaFree(d_sum));

    for (int i = 0; i < n; ++i) {
        if (sum[i] != static_cast<float>(3 * i)) {
            std::fprintf(stderr, "hello: wrong result at %d: %g + %g gave %g\n", i, a[i], b[i],
                         sum[i]);
            return 3;
        }
    }
    std::printf("hello: vector add of %d elements correct\n", n);
    return 0;
}
