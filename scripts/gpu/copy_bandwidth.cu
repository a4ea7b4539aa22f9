// Host<->device copy bandwidth with cudaMemcpy, from pinned and from pageable host memory,
// for a few sizes. A measuring program for scripts/gpu-check.sh (native vs through the
// stub), not a test. Usage: copy_bandwidth [REPS]. One line per measurement:
//   copy kind=h2d memory=pinned bytes=67108864 MiBps=24531.2
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cuda_runtime.h>

#define CHECK(call)                                                                     \
    do {                                                                                \
        cudaError_t err_ = (call);                                                      \
        if (err_ != cudaSuccess) {                                                      \
            std::printf("CUDA error %s at %s\n", cudaGetErrorName(err_), #call);       \
            return 2;                                                                   \
        }                                                                               \
    } while (0)

static double mib_per_s(size_t bytes, int reps, double seconds) {
    return (double)bytes * reps / (1024.0 * 1024.0) / seconds;
}

int main(int argc, char** argv) {
    int reps = argc > 1 ? std::atoi(argv[1]) : 10;
    const size_t sizes[] = {1u << 20, 64u << 20, 256u << 20};
    const size_t largest = 256u << 20;
    void* device = nullptr;
    void* pinned = nullptr;
    CHECK(cudaMalloc(&device, largest));
    CHECK(cudaMallocHost(&pinned, largest));
    void* pageable = std::malloc(largest);
    if (!pageable) return 2;
    std::memset(pageable, 1, largest);
    std::memset(pinned, 1, largest);
    for (size_t bytes : sizes) {
        for (int memory = 0; memory < 2; memory++) {
            void* host = memory == 0 ? pinned : pageable;
            const char* name = memory == 0 ? "pinned" : "pageable";
            // One untimed copy each way first (first-touch, mapping).
            CHECK(cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice));
            CHECK(cudaMemcpy(host, device, bytes, cudaMemcpyDeviceToHost));
            auto t0 = std::chrono::steady_clock::now();
            for (int i = 0; i < reps; i++)
                CHECK(cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice));
            CHECK(cudaDeviceSynchronize());
            auto t1 = std::chrono::steady_clock::now();
            for (int i = 0; i < reps; i++)
                CHECK(cudaMemcpy(host, device, bytes, cudaMemcpyDeviceToHost));
            auto t2 = std::chrono::steady_clock::now();
            std::printf("copy kind=h2d memory=%s bytes=%zu MiBps=%.1f\n", name, bytes,
                        mib_per_s(bytes, reps, std::chrono::duration<double>(t1 - t0).count()));
            std::printf("copy kind=d2h memory=%s bytes=%zu MiBps=%.1f\n", name, bytes,
                        mib_per_s(bytes, reps, std::chrono::duration<double>(t2 - t1).count()));
        }
    }
    std::free(pageable);
    CHECK(cudaFreeHost(pinned));
    CHECK(cudaFree(device));
    return 0;
}
