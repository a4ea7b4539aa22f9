#include <cuda_fp16.h>
#include <cuda_bf16.h>
// Half-precision conversions and arithmetic.
extern "C" __global__ void half_ops(const float* in, __half* h, float* back, float* sum, __nv_bfloat16* b, float* bback, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    __half x = __float2half(in[i]);
    h[i] = x;
    back[i] = __half2float(x);
    sum[i] = __half2float(__hadd(x, __hmul(x, __float2half(0.5f))));
    __nv_bfloat16 y = __float2bfloat16(in[i]);
    b[i] = y;
    bback[i] = __bfloat162float(y);
}
// Packs two floats into a __half2 (.x = a, .y = b) and a __nv_bfloat162.
extern "C" __global__ void pack_pairs(const float* in, __half2* h2, __nv_bfloat162* b2, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    h2[i] = __floats2half2_rn(in[i], -2.0f * in[i]);
    b2[i] = __floats2bfloat162_rn(in[i], -2.0f * in[i]);
}
