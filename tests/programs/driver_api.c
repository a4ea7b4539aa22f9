/* A C program using the CUDA driver API directly: PTX text from the file named by argv[1]
 * through cuModuleLoadData, cuLaunchKernel with kernelParams and with the `extra` buffer.
 * Prints "driver_api ok"; a failed call prints its name (cuGetErrorName) and exits 2. */
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(call)                                                              \
    do {                                                                         \
        CUresult r_ = (call);                                                    \
        if (r_ != CUDA_SUCCESS) {                                                \
            const char *name_ = "?";                                             \
            cuGetErrorName(r_, &name_);                                          \
            printf("CUDA error %s at line %d: %s\n", name_, __LINE__, #call);   \
            return 2;                                                            \
        }                                                                        \
    } while (0)

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s KERNELS.ptx\n", argv[0]);
        return 64;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 64; }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *ptx = calloc(len + 1, 1);
    if (fread(ptx, 1, len, f) != (size_t)len) { perror("read"); return 64; }
    fclose(f);

    int version = 0, count = 0;
    CHECK(cuInit(0));
    CHECK(cuDriverGetVersion(&version));
    CHECK(cuDeviceGetCount(&count));
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 0));
    char name[128];
    CHECK(cuDeviceGetName(name, sizeof name, dev));
    printf("driver %d, %d device(s): %s\n", version, count, name);
    CUcontext ctx;
    CHECK(cuCtxCreate(&ctx, NULL, 0, dev));
    CUmodule module;
    CHECK(cuModuleLoadData(&module, ptx));
    CUfunction add;
    CHECK(cuModuleGetFunction(&add, module, "vector_add"));

    enum { N = 5000 };
    static float a[N], b[N], c[N];
    for (int i = 0; i < N; i++) { a[i] = i; b[i] = 0.5f * i; }
    CUdeviceptr da, db, dc;
    CHECK(cuMemAlloc(&da, sizeof a));
    CHECK(cuMemAlloc(&db, sizeof b));
    CHECK(cuMemAlloc(&dc, sizeof c));
    CHECK(cuMemcpyHtoD(da, a, sizeof a));
    CHECK(cuMemcpyHtoD(db, b, sizeof b));
    int n = N;
    void *params[] = {&da, &db, &dc, &n};
    CHECK(cuLaunchKernel(add, (N + 127) / 128, 1, 1, 128, 1, 1, 0, NULL, params, NULL));
    CHECK(cuCtxSynchronize());
    CHECK(cuMemcpyDtoH(c, dc, sizeof c));
    for (int i = 0; i < N; i++) {
        if (c[i] != 1.5f * i) { printf("mismatch at %d: %f\n", i, c[i]); return 1; }
    }

    /* The same launch with a packed parameter buffer (CU_LAUNCH_PARAM_BUFFER_*), b + b. */
    struct { CUdeviceptr a, b, c; int n; } packed = {db, db, dc, N};
    size_t packed_size = sizeof packed;
    void *extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, &packed, CU_LAUNCH_PARAM_BUFFER_SIZE, &packed_size,
                     CU_LAUNCH_PARAM_END};
    CHECK(cuLaunchKernel(add, (N + 127) / 128, 1, 1, 128, 1, 1, 0, NULL, NULL, extra));
    CHECK(cuMemcpyDtoH(c, dc, sizeof c));
    for (int i = 0; i < N; i++) {
        if (c[i] != 1.0f * i) { printf("extra mismatch at %d: %f\n", i, c[i]); return 1; }
    }
    CHECK(cuMemFree(da));
    CHECK(cuMemFree(db));
    CHECK(cuMemFree(dc));
    CHECK(cuModuleUnload(module));
    CHECK(cuCtxDestroy(ctx));
    printf("driver_api ok\n");
    return 0;
}
