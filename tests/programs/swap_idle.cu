// Fills device memory with a pattern, stays idle (so the worker or the gateway's pool swaps the
// session out), then verifies every byte on the device with a kernel and on the host after a
// copy back.
// Usage: swap_idle MIB IDLE_MS, or swap_idle MIB - to stay idle until a line (or the end)
// arrives on stdin. Prints "filled" once the memory is written and "swap_idle ok" on success;
// on a CUDA error prints the error's name and exits with 2; on wrong data prints the first bad
// index and exits with 3.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
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

__device__ unsigned int pattern(unsigned int i) { return i * 2654435761u ^ 0x5a5a5a5au; }

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
    if (argc != 3) {
        std::printf("usage: swap_idle MIB IDLE_MS|-\n");
        return 1;
    }
    unsigned int n = (unsigned int)(std::atoi(argv[1]) * (1u << 20) / 4);
    bool idle_until_stdin = std::string(argv[2]) == "-";
    int idle_ms = idle_until_stdin ? 0 : std::atoi(argv[2]);
    unsigned int *data = nullptr, *bad = nullptr;
    CHECK(cudaMalloc(&data, n * sizeof(unsigned int)));
    CHECK(cudaMalloc(&bad, sizeof(unsigned int)));
    CHECK(cudaMemset(bad, 0, sizeof(unsigned int)));
    fill<<<(n + 255) / 256, 256>>>(data, n);
    CHECK(cudaDeviceSynchronize());
    std::printf("filled\n");
    std::fflush(stdout);

    // Idle: no CUDA call until the time is up or the test says to go on.
    if (idle_until_stdin) {
        int c;
        while ((c = std::getchar()) != EOF && c != '\n') {
        }
    } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(idle_ms));
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
        unsigned int want = (i * 2654435761u ^ 0x5a5a5a5au) + 1u;
        if (host[i] != want) {
            std::printf("word %u is %u, expected %u\n", i, host[i], want);
            return 3;
        }
    }
    std::free(host);
    CHECK(cudaFree(data));
    CHECK(cudaFree(bad));
    std::printf("swap_idle ok\n");
    return 0;
}
