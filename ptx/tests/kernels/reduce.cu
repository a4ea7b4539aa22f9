// Sums with warp shuffles, one atomicAdd per warp (integers: exact; floats: tolerance).
__device__ int warp_sum(int v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffff, v, o);
    return v;
}
extern "C" __global__ void reduce_int(const int* in, unsigned long long* out, int n) {
    int s = 0;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) s += in[i];
    s = warp_sum(s);
    if ((threadIdx.x & 31) == 0) atomicAdd(out, (unsigned long long)(long long)s);
}
extern "C" __global__ void reduce_float(const float* in, float* out, int n) {
    float s = 0.0f;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) s += in[i];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffff, s, o);
    if ((threadIdx.x & 31) == 0) atomicAdd(out, s);
}
