// Fills device memory with a pattern, then holds it without making calls until a line (or
// the end) arrives on stdin, then verifies every byte on the device with a kernel and on the
// host after a copy back. While it waits its session is idle, so the pool may swap it out.
// Usage: hold_and_verify MIB. Prints "filled" when the memory is written and
// "hold_and_verify ok" on success; on a CUDA error prints the error's name and exits with 2;
// on wrong data prints the first bad index and exits with 3.
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

#define CHECK(call)                                                                     \
    do {                                                                                \
        cudaError_t err_ = (call);                                                      \
        if (err_ != cudaSuccess) {                                                      \
            std::printf("CUDA error %s (%s) at %s\n", cudaGetErrorName(err_),          \
                        cudaGetErrorString(err_), #call);                               \
            return 2;                                                                   \
        }                                                                               \
    } while (0)

__device__ unsigned int pattern(unsigned int i) { return i * 2246822519u ^ 0x3c3c3c3cu; }

__global__ void fill(unsigned int *data, unsigned int n) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) data[i] = pattern(i);
}

// Counts words that differ from the pattern, then adds 1 to every word.
__global__ void check_and_bump(unsigned int *data, unsigned int n, unsigned int *bad) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        if (data[i] != pattern(i)) atomicAdd(bad, 1u);
        data[i] += 1u;
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        std::printf("usage: hold_and_verify MIB\n");
        return 1;
    }
    unsigned int n = (unsigned int)(std::atoi(argv[1]) * (1u << 20) / 4);
    unsigned int *data = nullptr, *bad = nullptr;
    CHECK(cudaMalloc(&data, n * sizeof(unsigned int)));
    CHECK(cudaMalloc(&bad, sizeof(unsigned int)));
    CHECK(cudaMemset(bad, 0, sizeof(unsigned int)));
    fill<<<(n + 255) / 256, 256>>>(data, n);
    CHECK(cudaDeviceSynchronize());
    std::printf("filled\n");
    std::fflush(stdout);

    // Idle: no CUDA call until the test says to go on.
    int c;
    while ((c = std::getchar()) != EOF && c != '\n') {
    }

    check_and_bump<<<(n + 255) / 256, 256>>>(data, n, bad);
    unsigned int bad_host = 0;
    CHECK(cudaMemcpy(&bad_host, bad, sizeof(unsigned int), cudaMemcpyDeviceToHost));
    if (bad_host != 0) {
        std::printf("%u words changed on the device\n", bad_host);
        return 3;
    }
    unsigned int *host = (unsigned int *)std::malloc(n * sizeof(unsigned int));
    CHECK(cudaMemcpy(host, data, n * sizeof(unsigned int), cudaMemcpyDeviceToHost));
    for (unsigned int i = 0; i < n; i++) {
        unsigned int want = (i * 2246822519u ^ 0x3c3c3c3cu) + 1u;
        if (host[i] != want) {
            std::printf("word %u is %u, expected %u\n", i, host[i], want);
            return 3;
        }
    }
    std::free(host);
    CHECK(cudaFree(data));
    CHECK(cudaFree(bad));
    std::printf("hold_and_verify ok\n");
    return 0;
}
