// Reverses each block's segment through dynamically sized shared memory
// (extern __shared__, size given at launch), with a block-wide sum via __syncthreads_count.
extern "C" __global__ void reverse_blocks(const int* in, int* out, int* positives) {
    extern __shared__ int buf[];
    int t = threadIdx.x, base = blockIdx.x * blockDim.x;
    int v = in[base + t];
    buf[t] = v;
    int count = __syncthreads_count(v > 0);
    out[base + t] = buf[blockDim.x - 1 - t];
    if (t == 0) positives[blockIdx.x] = count;
}
