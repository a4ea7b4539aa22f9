// Measures, through the stub: empty-kernel launches per second (asynchronous, then one
// synchronisation) and the round trip of a synchronous call (cudaDeviceSynchronize with no
// work pending). A measuring program for benchmarks, not a test: it prints numbers.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

__global__ void empty() {}

int main(int argc, char** argv) {
    int launches = argc > 1 ? std::atoi(argv[1]) : 200000;
    int syncs = argc > 2 ? std::atoi(argv[2]) : 5000;
    empty<<<1, 1>>>();
    if (cudaDeviceSynchronize() != cudaSuccess) return 2;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < launches; i++) empty<<<1, 1>>>();
    auto t1 = std::chrono::steady_clock::now();
    if (cudaDeviceSynchronize() != cudaSuccess) return 2;
    auto t2 = std::chrono::steady_clock::now();
    for (int i = 0; i < syncs; i++) cudaDeviceSynchronize();
    auto t3 = std::chrono::steady_clock::now();
    double issue = std::chrono::duration<double>(t1 - t0).count();
    double total = std::chrono::duration<double>(t2 - t0).count();
    double rtt = std::chrono::duration<double>(t3 - t2).count() / syncs;
    std::printf("launches issued: %.0f/s; executed: %.0f/s; sync call round trip: %.1f us\n",
                launches / issue, launches / total, rtt * 1e6);
    return 0;
}
