// Polynomial evaluation with coefficients in constant memory (set through cuModuleGetGlobal).
__constant__ float coeffs[8];
__device__ int calls_made = 7;
extern "C" __global__ void poly(const float* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float acc = 0.0f;
    for (int k = 7; k >= 0; --k) acc = acc * x[i] + coeffs[k];
    y[i] = acc;
    if (i == 0) atomicAdd(&calls_made, 1);
}
