// Host-side check of the CUDA kernel's int6 layout (no GPU needed): reads K, N, packed rows,
// the expected codes and x from stdin, applies pgolf_int6_code exactly as the kernel does,
// and prints y = x @ W^T (one value per line) for the Python test to compare.
#include <stdio.h>
#include <stdlib.h>

#include "../int6_pack.cuh"

int main() {
  int M, N, K;
  if (scanf("%d %d %d", &M, &N, &K) != 3) return 2;
  const int rb = pgolf_int6_row_bytes(K);
  uint8_t* w = (uint8_t*)malloc((size_t)N * rb);
  float* x = (float*)malloc(sizeof(float) * M * K);
  for (int i = 0; i < N * rb; ++i) { unsigned v; if (scanf("%u", &v) != 1) return 2; w[i] = (uint8_t)v; }
  for (int i = 0; i < M * K; ++i) if (scanf("%f", &x[i]) != 1) return 2;
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double acc = 0;
      for (int k = 0; k < K; ++k) acc += (double)pgolf_int6_code(w + (size_t)n * rb + 3 * (k / 4), k % 4) * x[m * K + k];
      printf("%.9g\n", acc);
    }
  return 0;
}
