// Kernel printf reaches the program's stdout.
#include <cstdio>
#include <cuda_runtime.h>

__global__ void say(int base) { printf("hello from thread %d: %d\n", threadIdx.x, base + threadIdx.x); }

int main() {
    say<<<1, 4>>>(100);
    cudaError_t err = cudaDeviceSynchronize();
    std::printf("printf done: %s\n", cudaGetErrorName(err));
    return err == cudaSuccess ? 0 : 2;
}
