// Launches and synchronises in a loop, printing "iteration N" after each, for up to a minute.
// Used to kill the worker mid-run: the program must then get an error (printed as
// "error <name>", exit 2) instead of hanging.
#include <cstdio>
#include <unistd.h>
#include <cuda_runtime.h>

__global__ void bump(int* p) { atomicAdd(p, 1); }

int main() {
    int* p = nullptr;
    cudaError_t err = cudaMalloc(&p, sizeof(int));
    for (int i = 0; err == cudaSuccess && i < 600; i++) {
        bump<<<1, 32>>>(p);
        err = cudaDeviceSynchronize();
        if (err == cudaSuccess) {
            std::printf("iteration %d\n", i);
            std::fflush(stdout);
            usleep(100 * 1000);
        }
    }
    if (err != cudaSuccess) {
        std::printf("error %s\n", cudaGetErrorName(err));
        return 2;
    }
    return 0;
}
