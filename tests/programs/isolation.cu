// Two sessions must not reach each other's memory.
//   owner FILE      allocates, fills a pattern, prints "address 0x..." and waits until FILE
//                   exists, then checks its pattern: prints "owner intact" (exit 0) or
//                   "owner corrupted" (exit 1).
//   intruder ADDR   tries to read ADDR with cudaMemcpy and to write it from a kernel; prints
//                   "read: <error>" and "write: <error>" and exits 0 if both failed.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>
#include <cuda_runtime.h>

__global__ void scribble(int* p) { p[threadIdx.x] = -1; }

int main(int argc, char** argv) {
    if (argc < 3) return 64;
    const int n = 256;
    if (!std::strcmp(argv[1], "owner")) {
        int host[n], *d = nullptr;
        for (int i = 0; i < n; i++) host[i] = i * 3;
        if (cudaMalloc(&d, sizeof host) != cudaSuccess) return 2;
        if (cudaMemcpy(d, host, sizeof host, cudaMemcpyHostToDevice) != cudaSuccess) return 2;
        std::printf("address %p\n", (void*)d);
        std::fflush(stdout);
        while (access(argv[2], F_OK) != 0) usleep(20 * 1000);
        int back[n];
        if (cudaMemcpy(back, d, sizeof back, cudaMemcpyDeviceToHost) != cudaSuccess) return 2;
        bool same = std::memcmp(host, back, sizeof host) == 0;
        std::printf(same ? "owner intact\n" : "owner corrupted\n");
        return same ? 0 : 1;
    }
    if (!std::strcmp(argv[1], "intruder")) {
        int* target = (int*)std::strtoull(argv[2], nullptr, 16);
        int stolen[n];
        cudaError_t read = cudaMemcpy(stolen, target, sizeof stolen, cudaMemcpyDeviceToHost);
        std::printf("read: %s\n", cudaGetErrorName(read));
        scribble<<<1, n>>>(target);
        cudaError_t write = cudaDeviceSynchronize();
        std::printf("write: %s\n", cudaGetErrorName(write));
        return read != cudaSuccess && write != cudaSuccess ? 0 : 1;
    }
    return 64;
}
