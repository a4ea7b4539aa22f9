#include <cstdio>
// Kernel printf with several conversions.
extern "C" __global__ void say(int base) {
    int t = threadIdx.x;
    printf("block %d thread %d: %d %u %x %.3f %s %c %lld\n", blockIdx.x, t, base - t, (unsigned)t * 3u, 255 + t, t * 0.5, "ok", 'A' + t, (long long)t << 40);
}
