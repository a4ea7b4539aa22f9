// Stream-ordered allocation and memory pools (cudaMallocAsync, cudaFreeAsync,
// cudaMallocFromPoolAsync, cudaMemPoolCreate, cudaDeviceGetDefaultMemPool,
// cudaMemPoolSetAttribute/GetAttribute, cudaMemPoolTrimTo, cudaDeviceSetMemPool), 3D copies
// (cudaMalloc3D, cudaMemset3D, cudaMemcpy3D in every direction) and copies large enough to be
// split into many frames, run through the gpufn stub. Each case prints "<case> ok"; the program ends with "mempool ok". A CUDA error prints
// its name and exits with 2; a wrong result exits with 1.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>
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

const size_t MiB = 1 << 20;

__global__ void fill(int* out, int n, int base) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
        out[i] = base + i;
}

static uint64_t attr(cudaMemPool_t pool, cudaMemPoolAttr which) {
    uint64_t value = 0;
    CHECK(cudaMemPoolGetAttribute(pool, which, &value));
    return value;
}

// Fills `n` ints at `p` on `stream` and checks them on the host.
static void fill_and_check(int* p, int n, int base, cudaStream_t stream) {
    fill<<<8, 128, 0, stream>>>(p, n, base);
    std::vector<int> back(n);
    CHECK(cudaMemcpyAsync(back.data(), p, n * sizeof(int), cudaMemcpyDeviceToHost, stream));
    CHECK(cudaStreamSynchronize(stream));
    for (int i = 0; i < n; i++) EXPECT(back[i] == base + i, "[%d] = %d", i, back[i]);
}

// The default pool with CUDA's default release threshold (0): freed memory goes back to the
// device at the next synchronisation.
static void case_default_pool(cudaStream_t stream) {
    int supported = 0;
    CHECK(cudaDeviceGetAttribute(&supported, cudaDevAttrMemoryPoolsSupported, 0));
    EXPECT(supported == 1, "memory pools supported = %d", supported);
    cudaMemPool_t def, current;
    CHECK(cudaDeviceGetDefaultMemPool(&def, 0));
    CHECK(cudaDeviceGetMemPool(&current, 0));
    EXPECT(def == current, "the current pool is the default pool at start");
    EXPECT(attr(def, cudaMemPoolAttrReleaseThreshold) == 0, "default release threshold");

    int* p;
    const int n = (4 * MiB) / sizeof(int);
    CHECK(cudaMallocAsync((void**)&p, n * sizeof(int), stream));
    EXPECT(attr(def, cudaMemPoolAttrUsedMemCurrent) >= 4 * MiB, "used while allocated");
    fill_and_check(p, n, 7, stream);
    CHECK(cudaFreeAsync(p, stream));
    CHECK(cudaStreamSynchronize(stream));
    EXPECT(attr(def, cudaMemPoolAttrUsedMemCurrent) == 0, "used after free");
    EXPECT(attr(def, cudaMemPoolAttrReservedMemCurrent) == 0, "released at the sync");
    EXPECT(attr(def, cudaMemPoolAttrReservedMemHigh) >= 4 * MiB, "reserved high watermark");
    std::printf("default pool ok\n");
}

// A release threshold keeps freed memory in the pool (the device's free memory does not come
// back) until the pool is trimmed.
static void case_release_threshold(cudaStream_t stream) {
    cudaMemPool_t def;
    CHECK(cudaDeviceGetDefaultMemPool(&def, 0));
    uint64_t keep_all = UINT64_MAX;
    CHECK(cudaMemPoolSetAttribute(def, cudaMemPoolAttrReleaseThreshold, &keep_all));
    EXPECT(attr(def, cudaMemPoolAttrReleaseThreshold) == UINT64_MAX, "threshold set");

    size_t free_before = 0, total = 0;
    CHECK(cudaMemGetInfo(&free_before, &total));
    int* p;
    CHECK(cudaMallocAsync((void**)&p, 16 * MiB, stream));
    CHECK(cudaFreeAsync(p, stream));
    CHECK(cudaStreamSynchronize(stream));
    EXPECT(attr(def, cudaMemPoolAttrReservedMemCurrent) >= 16 * MiB, "kept by the pool");
    EXPECT(attr(def, cudaMemPoolAttrUsedMemCurrent) == 0, "none of it in use");
    size_t free_kept = 0;
    CHECK(cudaMemGetInfo(&free_kept, &total));
    EXPECT(free_kept + 16 * MiB <= free_before, "the pool still holds the memory: %zu of %zu",
           free_kept, free_before);

    // A smaller allocation is served from what the pool keeps.
    int* q;
    const int n = MiB / sizeof(int);
    CHECK(cudaMallocAsync((void**)&q, n * sizeof(int), stream));
    EXPECT(attr(def, cudaMemPoolAttrReservedMemCurrent) >= 16 * MiB, "no new reservation");
    fill_and_check(q, n, 100, stream);
    CHECK(cudaFreeAsync(q, stream));
    CHECK(cudaStreamSynchronize(stream));

    CHECK(cudaMemPoolTrimTo(def, 0));
    EXPECT(attr(def, cudaMemPoolAttrReservedMemCurrent) == 0, "trimmed");
    size_t free_after = 0;
    CHECK(cudaMemGetInfo(&free_after, &total));
    EXPECT(free_after == free_before, "trim gave the memory back: %zu vs %zu", free_after,
           free_before);

    uint64_t zero = 0;
    CHECK(cudaMemPoolSetAttribute(def, cudaMemPoolAttrUsedMemHigh, &zero));
    EXPECT(attr(def, cudaMemPoolAttrUsedMemHigh) == 0, "high watermark reset");
    CHECK(cudaMemPoolSetAttribute(def, cudaMemPoolAttrReleaseThreshold, &zero));
    std::printf("release threshold ok\n");
}

// An explicit pool: allocations from it, as the device's current pool, and its destruction.
static void case_created_pool(cudaStream_t stream) {
    cudaMemPoolProps props = {};
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = 0;
    cudaMemPool_t pool, def;
    CHECK(cudaMemPoolCreate(&pool, &props));
    CHECK(cudaDeviceGetDefaultMemPool(&def, 0));
    EXPECT(pool != def, "a new pool");

    int* a;
    const int n = MiB / sizeof(int);
    CHECK(cudaMallocFromPoolAsync((void**)&a, n * sizeof(int), pool, stream));
    EXPECT(attr(pool, cudaMemPoolAttrUsedMemCurrent) >= MiB, "used in the new pool");
    EXPECT(attr(def, cudaMemPoolAttrUsedMemCurrent) == 0, "not in the default pool");
    fill_and_check(a, n, 3, stream);

    CHECK(cudaDeviceSetMemPool(0, pool));
    cudaMemPool_t current;
    CHECK(cudaDeviceGetMemPool(&current, 0));
    EXPECT(current == pool, "current pool set");
    int* b;
    CHECK(cudaMallocAsync((void**)&b, n * sizeof(int), stream));
    EXPECT(attr(pool, cudaMemPoolAttrUsedMemCurrent) >= 2 * MiB, "cudaMallocAsync used it");
    fill_and_check(b, n, 11, stream);
    CHECK(cudaDeviceSetMemPool(0, def));

    CHECK(cudaFreeAsync(a, stream));
    CHECK(cudaFreeAsync(b, stream));
    CHECK(cudaStreamSynchronize(stream));
    EXPECT(attr(pool, cudaMemPoolAttrUsedMemCurrent) == 0, "all freed");
    CHECK(cudaMemPoolDestroy(pool));

    // cudaFreeAsync also frees memory from cudaMalloc.
    int* plain;
    CHECK(cudaMalloc((void**)&plain, MiB));
    CHECK(cudaFreeAsync(plain, stream));
    CHECK(cudaStreamSynchronize(stream));
    std::printf("created pool ok\n");
}

// 3D: a pitched volume filled from the host, a sub-box copied device to device, read back.
static void case_memcpy_3d() {
    const int w = 19, h = 7, d = 5;
    cudaExtent extent = make_cudaExtent(w * sizeof(int), h, d);
    cudaPitchedPtr a, b;
    CHECK(cudaMalloc3D(&a, extent));
    CHECK(cudaMalloc3D(&b, extent));
    EXPECT(a.pitch >= w * sizeof(int), "pitch %zu", a.pitch);
    CHECK(cudaMemset3D(b, 0, extent));

    std::vector<int> host(w * h * d), back(w * h * d, -1);
    for (int i = 0; i < w * h * d; i++) host[i] = i * 3 + 2;
    cudaMemcpy3DParms up = {};
    up.srcPtr = make_cudaPitchedPtr(host.data(), w * sizeof(int), w, h);
    up.dstPtr = a;
    up.extent = extent;
    up.kind = cudaMemcpyHostToDevice;
    CHECK(cudaMemcpy3D(&up));

    // Copy the box x in [2, 12), y in [1, 6), z in [1, 4) from a to the same place in b.
    cudaMemcpy3DParms box = {};
    box.srcPtr = a;
    box.dstPtr = b;
    box.srcPos = make_cudaPos(2 * sizeof(int), 1, 1);
    box.dstPos = make_cudaPos(2 * sizeof(int), 1, 1);
    box.extent = make_cudaExtent(10 * sizeof(int), 5, 3);
    box.kind = cudaMemcpyDeviceToDevice;
    CHECK(cudaMemcpy3D(&box));

    cudaMemcpy3DParms down = {};
    down.srcPtr = b;
    down.dstPtr = make_cudaPitchedPtr(back.data(), w * sizeof(int), w, h);
    down.extent = extent;
    down.kind = cudaMemcpyDeviceToHost;
    CHECK(cudaMemcpy3D(&down));
    for (int z = 0; z < d; z++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                int i = (z * h + y) * w + x;
                bool inside = x >= 2 && x < 12 && y >= 1 && y < 6 && z >= 1 && z < 4;
                int want = inside ? host[i] : 0;
                EXPECT(back[i] == want, "(%d,%d,%d) = %d, want %d", x, y, z, back[i], want);
            }
    CHECK(cudaFree(a.ptr));
    CHECK(cudaFree(b.ptr));
    std::printf("memcpy3d ok\n");
}

// Copies the stub splits into many 4 MiB frames (more than one window of device-to-host
// requests), at an odd size, sync and async, plus a copy that runs past its allocation.
static void case_large_copies(cudaStream_t stream) {
    const size_t n = 40 * MiB + 12345;
    std::vector<unsigned char> host(n), back(n, 0);
    for (size_t i = 0; i < n; i++) host[i] = (unsigned char)(i * 2654435761u >> 13);
    unsigned char *a, *b, *pinned;
    CHECK(cudaMalloc((void**)&a, n));
    CHECK(cudaMalloc((void**)&b, n));
    CHECK(cudaMallocHost((void**)&pinned, n));
    CHECK(cudaMemcpy(a, host.data(), n, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
    CHECK(cudaMemcpy(back.data(), b, n, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) EXPECT(back[i] == host[i], "sync copy [%zu]", i);
    CHECK(cudaMemsetAsync(a, 0, n, stream));
    CHECK(cudaMemcpyAsync(a, host.data(), n, cudaMemcpyHostToDevice, stream));
    CHECK(cudaMemcpyAsync(pinned, a, n, cudaMemcpyDeviceToHost, stream));
    CHECK(cudaStreamSynchronize(stream));
    for (size_t i = 0; i < n; i++) EXPECT(pinned[i] == host[i], "async copy [%zu]", i);
    // Reading 8 MiB past the end of `b` fails as a whole; the session carries on.
    std::vector<unsigned char> over(n + 8 * MiB);
    cudaError_t past = cudaMemcpy(over.data(), b, over.size(), cudaMemcpyDeviceToHost);
    EXPECT(past == cudaErrorInvalidValue, "copy past the allocation: %s", cudaGetErrorName(past));
    CHECK(cudaMemcpy(back.data(), a, n, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) EXPECT(back[i] == host[i], "after the error [%zu]", i);
    CHECK(cudaFreeHost(pinned));
    CHECK(cudaFree(a));
    CHECK(cudaFree(b));
    std::printf("large copies ok\n");
}

int main() {
    cudaStream_t stream;
    CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    case_default_pool(stream);
    case_release_threshold(stream);
    case_created_pool(stream);
    case_memcpy_3d();
    case_large_copies(stream);
    CHECK(cudaStreamDestroy(stream));
    std::printf("mempool ok\n");
    return 0;
}
