// The int6 packing layout, shared by the CUDA kernel and its host-side test.
// Four codes v0..v3 in [-32, 31], biased by 32, fill the 24 bits of three bytes
// LSB first: word = u0 | u1 << 6 | u2 << 12 | u3 << 18 (pgolf/quant/packing.py).
#pragma once
#include <stdint.h>

#if defined(__CUDACC__)
#define PGOLF_HD __host__ __device__ __forceinline__
#else
#define PGOLF_HD inline
#endif

// Code i (0..3) of the group whose three bytes start at p.
PGOLF_HD int pgolf_int6_code(const uint8_t* p, int i) {
  uint32_t word = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16);
  return (int)((word >> (6 * i)) & 63u) - 32;
}

// Bytes per packed row of K codes (rows are padded to whole groups of four).
PGOLF_HD int pgolf_int6_row_bytes(int k) { return 3 * ((k + 3) / 4); }
