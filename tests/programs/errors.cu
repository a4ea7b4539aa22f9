// Error cases a program must see as real CUDA errors. argv[1] picks the case:
//   oob    a kernel writes far outside its allocation: cudaErrorIllegalAddress at the next sync
//   quota  an allocation beyond the session's quota: cudaErrorMemoryAllocation, and a small
//          allocation still works afterwards
// Prints "<case>: <error name>" and exits 0 when the expected error appeared, else 1.
#include <cstdio>
#include <cstring>
#include <cuda_runtime.h>

__global__ void write_at(int* p, long long offset) { p[offset] = 42; }

static int oob() {
    int* p = nullptr;
    if (cudaMalloc(&p, 1024) != cudaSuccess) return 2;
    write_at<<<1, 1>>>(p, 1LL << 36);
    cudaError_t err = cudaDeviceSynchronize();
    std::printf("oob: %s\n", cudaGetErrorName(err));
    return err == cudaErrorIllegalAddress ? 0 : 1;
}

static int quota() {
    size_t free_bytes = 0, total = 0;
    if (cudaMemGetInfo(&free_bytes, &total) != cudaSuccess) return 2;
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, total + (64u << 20));
    std::printf("quota: %s\n", cudaGetErrorName(err));
    if (err != cudaErrorMemoryAllocation) return 1;
    cudaGetLastError();  // clear the (non-sticky) error
    void* small = nullptr;
    cudaError_t again = cudaMalloc(&small, 1 << 20);
    std::printf("small allocation afterwards: %s\n", cudaGetErrorName(again));
    return again == cudaSuccess ? 0 : 1;
}

int main(int argc, char** argv) {
    const char* which = argc > 1 ? argv[1] : "";
    if (!std::strcmp(which, "oob")) return oob();
    if (!std::strcmp(which, "quota")) return quota();
    std::fprintf(stderr, "usage: %s oob|quota\n", argv[0]);
    return 64;
}
