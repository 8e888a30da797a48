// y[M, N] = x[M, K] @ (scale[N] * W[N, K])^T with W packed as int6 (int6_pack.cuh).
//
// For the memory-bound shapes (M <= 16: eval and TTT decode-like batches) weight bytes
// dominate, and packed int6 moves 0.75 bytes per weight instead of 2. One warp computes
// one output column n for all M rows: its lanes stride along the packed row (one
// three-byte group, four codes, per lane per iteration), multiply the codes with x read
// through the read-only cache, and reduce across the warp with shuffles. Plain CUDA behind
// a C ABI, so it compiles without torch headers (the CI compile check); the torch binding
// is int6_matmul_binding.cpp.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "int6_pack.cuh"

#define PGOLF_MAX_M 16
#define PGOLF_WARPS 4

__global__ void pgolf_int6_matmul_small_m_kernel(const __nv_bfloat16* __restrict__ x,
                                                 const uint8_t* __restrict__ w,
                                                 const float* __restrict__ scale,
                                                 __nv_bfloat16* __restrict__ y, int M, int N, int K) {
  const int lane = threadIdx.x & 31;
  const int n = blockIdx.x * PGOLF_WARPS + (threadIdx.x >> 5);
  if (n >= N) return;
  const uint8_t* row = w + (size_t)n * pgolf_int6_row_bytes(K);
  float acc[PGOLF_MAX_M];
#pragma unroll
  for (int m = 0; m < PGOLF_MAX_M; ++m) acc[m] = 0.f;
  const int groups = (K + 3) / 4;
  for (int g = lane; g < groups; g += 32) {
    const uint8_t* p = row + 3 * g;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int k = 4 * g + i;
      if (k >= K) break;
      const float c = (float)pgolf_int6_code(p, i);
#pragma unroll
      for (int m = 0; m < PGOLF_MAX_M; ++m)
        if (m < M) acc[m] += c * __bfloat162float(__ldg(x + (size_t)m * K + k));
    }
  }
#pragma unroll
  for (int m = 0; m < PGOLF_MAX_M; ++m) {
    float v = acc[m];
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
    if (lane == 0 && m < M) y[(size_t)m * N + n] = __float2bfloat16(v * scale[n]);
  }
}

// Returns 0 on success, a cudaError_t otherwise (1 for unsupported arguments).
extern "C" int pgolf_int6_matmul_small_m(const void* x, const uint8_t* w, const float* scale, void* y,
                                         int M, int N, int K, cudaStream_t stream) {
  if (M < 1 || M > PGOLF_MAX_M || N < 1 || K < 1) return 1;
  dim3 block(32 * PGOLF_WARPS);
  dim3 grid((N + PGOLF_WARPS - 1) / PGOLF_WARPS);
  pgolf_int6_matmul_small_m_kernel<<<grid, block, 0, stream>>>(
      (const __nv_bfloat16*)x, w, scale, (__nv_bfloat16*)y, M, N, K);
  return (int)cudaGetLastError();
}
