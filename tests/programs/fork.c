/* fork() with a live CUDA session: the child must not use the parent's connection (every call
 * that needs the worker answers CUDA_ERROR_NOT_INITIALIZED, as with a real driver a forked child
 * has to exec before using CUDA), and the parent's session must carry on unharmed: its device
 * memory still holds what it wrote before the fork.
 * Prints "fork child refused" (from the child) and "fork ok"; a failure prints what and exits
 * non-zero. */
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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

enum { N = 4096 };

/* The child: calls that need the worker are refused; it never writes to the connection. */
static int child(CUdeviceptr d) {
    static unsigned char buf[N];
    CUresult sync = cuCtxSynchronize();
    CUresult copy = cuMemcpyDtoH(buf, d, N);
    CUdeviceptr other = 0;
    CUresult alloc = cuMemAlloc(&other, N);
    if (sync != CUDA_ERROR_NOT_INITIALIZED || copy != CUDA_ERROR_NOT_INITIALIZED ||
        alloc != CUDA_ERROR_NOT_INITIALIZED) {
        printf("child: expected CUDA_ERROR_NOT_INITIALIZED, got sync %d, copy %d, alloc %d\n",
               (int)sync, (int)copy, (int)alloc);
        return 1;
    }
    printf("fork child refused\n");
    fflush(stdout);
    return 0;
}

int main(void) {
    static unsigned char in[N], out[N];
    for (int i = 0; i < N; i++) in[i] = (unsigned char)(i * 7 + 1);
    CUdevice dev;
    CUcontext ctx;
    CUdeviceptr d;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuCtxCreate(&ctx, NULL, 0, dev));
    CHECK(cuMemAlloc(&d, N));
    CHECK(cuMemcpyHtoD(d, in, N));
    CHECK(cuCtxSynchronize());
    fflush(stdout);

    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 3; }
    if (pid == 0) _exit(child(d));
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        printf("the child failed (status %d)\n", status);
        return 1;
    }

    /* The parent's session is intact: same memory, new work. */
    CHECK(cuMemcpyDtoH(out, d, N));
    if (memcmp(in, out, N) != 0) { printf("parent memory changed after fork\n"); return 1; }
    CHECK(cuMemsetD8(d, 0x5a, N));
    CHECK(cuMemcpyDtoH(out, d, N));
    for (int i = 0; i < N; i++)
        if (out[i] != 0x5a) { printf("parent memset wrong at %d\n", i); return 1; }
    CHECK(cuMemFree(d));
    printf("fork ok\n");
    return 0;
}
