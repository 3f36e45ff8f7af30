#pragma once
// Routed-expert products on tensor cores: a warp multiplies a tile of 16 weight rows by up to 8
// tokens with mma.sync m16n8k16 (fp32 accumulation). Weight rows are the A operand, tokens the
// columns of B. Thread (g = lane / 4, q = lane % 4) holds rows g and g + 8 and token g; a
// 64-column chunk is four mma steps, and in step j thread q supplies the columns base .. base + 3,
// base = 32 (j / 2) + 8 q + 4 (j % 2). Which columns feed which k inside one mma does not change
// the sum, and this choice gives each thread contiguous columns of x and of the weights.
//
// MXFP4 tiles (gpu/expert_tiles.h) widen to fp16 operands exactly (E2M1 x 2^-14), with the inputs
// in fp16; each MX block's two steps go into a fresh accumulator that is then scaled, so the
// block scale is applied in fp32. bf16 experts are read row-major as they are, inputs in bf16.

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "gpu/cuda_util.cuh"
#include "gpu/expert_format.h"
#include "gpu/expert_tiles.h"
#include "gpu/kernels/kernels.cuh"

namespace ultraserve::gpu {

constexpr int kTileTokens = 8;  // the mma's n: tokens multiplied at once
// Warps splitting one tile's chunks (warp w: chunks w, w + 4, ...), their sums added in warp
// order: moe.cu's blocks, and decode_step.cu's groups of four warps, which so add the same sums.
constexpr int kTileWarps = 4;

// d = a b + c on one m16n8k16 step.
template <ExpertFormat F>
__device__ __forceinline__ void mma_step(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1,
                                         const float (&c)[4]) {
  if constexpr (F == ExpertFormat::mxfp4)
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%10,%11,%12,%13};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(c[0]), "f"(c[1]), "f"(c[2]),
                   "f"(c[3]));
  else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%10,%11,%12,%13};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(c[0]), "f"(c[1]), "f"(c[2]),
                   "f"(c[3]));
}

// Which weight rows a tile is: `gate_up` tiles pair 8 gate rows (A rows 0-7) with their 8 up rows
// (8-15); down tiles are 16 consecutive rows of an expert's matrix.
struct ExpertTile {
  const uint8_t* codes;   // the matrix of every expert: [E][rows][cols]
  const uint8_t* scales;  // mxfp4 only
  int rows, cols;         // of one expert's matrix (gate/up: 2 x width rows)
  TileRows order;
  int expert, tile;
};

// Token g's inputs for thread q's columns of a chunk: 8 q .. (steps 0-1) and 32 + 8 q .. (2-3),
// as B operand registers (two values each, the lower column first).
struct ChunkInputs {
  uint4 lo, hi;
  template <typename T>
  __device__ ChunkInputs(const T* x, int lane)
      : lo(*reinterpret_cast<const uint4*>(x + 8 * (lane % 4))), hi(*reinterpret_cast<const uint4*>(x + 32 + 8 * (lane % 4))) {}
};

template <ExpertFormat F>
struct TileOperands;

template <>
struct TileOperands<ExpertFormat::mxfp4> {
  using Input = __half;
  static constexpr int kMaxChunksInFlight = 8;  // 20 bytes each
  struct Chunk {
    uint4 codes;
    uint32_t scales;  // row g's two blocks, then row g + 8's
  };
  const uint4* codes;
  const uint32_t* scales;

  __device__ TileOperands(const ExpertTile& t, int lane) {
    const size_t tile = size_t(t.expert) * tile_count(t.rows, t.order) + t.tile, chunks = tile_chunks(t.cols);
    codes = reinterpret_cast<const uint4*>(t.codes + tile * chunks * kTileChunkCodeBytes) + lane;
    scales = reinterpret_cast<const uint32_t*>(t.scales + tile * chunks * kTileChunkScaleBytes) + lane / 4;
  }
  __device__ Chunk load(int chunk) const {
    return {__ldcs(codes + chunk * (kTileChunkCodeBytes / 16)), __ldg(scales + chunk * (kTileChunkScaleBytes / 4))};
  }
  // acc += the chunk's rows . x (x: token g's inputs from column 64 chunk, fp16).
  __device__ static void multiply(const Chunk& c, const Input* x, int lane, float (&acc)[4]) {
    const ChunkInputs in(x, lane);
    const uint32_t words[4] = {c.codes.x, c.codes.y, c.codes.z, c.codes.w};
#pragma unroll
    for (int block = 0; block < 2; ++block) {
      const uint4& xb = block ? in.hi : in.lo;
      const uint32_t w0 = words[2 * block], w1 = words[2 * block + 1];
      const uint32_t a0[4] = {tile_register(w0, 0), tile_register(w0, 1), tile_register(w0, 2), tile_register(w0, 3)};
      const uint32_t a1[4] = {tile_register(w1, 0), tile_register(w1, 1), tile_register(w1, 2), tile_register(w1, 3)};
      float d[4];
      mma_step<ExpertFormat::mxfp4>(d, a0, xb.x, xb.y, {0.0f, 0.0f, 0.0f, 0.0f});
      mma_step<ExpertFormat::mxfp4>(d, a1, xb.z, xb.w, d);
      // 2^(s - 127) times the 2^14 the codes were widened without: exponent field s + 14.
      const float scale_g = __uint_as_float(((c.scales >> (8 * block)) & 0xffu) + 14u << 23);
      const float scale_g8 = __uint_as_float(((c.scales >> (8 * block + 16)) & 0xffu) + 14u << 23);
      acc[0] = fmaf(d[0], scale_g, acc[0]);
      acc[1] = fmaf(d[1], scale_g, acc[1]);
      acc[2] = fmaf(d[2], scale_g8, acc[2]);
      acc[3] = fmaf(d[3], scale_g8, acc[3]);
    }
  }
  // Eight inputs for the B operand: fp16 holds every bf16 value up to 65504 with more precision;
  // larger magnitudes (never seen in normalized activations) saturate there.
  __device__ static uint4 widen(const uint4& raw) {
    float f[8];
    bf16x8_to_float(raw, f);
    uint4 out;
    uint32_t* o = reinterpret_cast<uint32_t*>(&out);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const __half2 h = __floats2half2_rn(fminf(fmaxf(f[2 * i], -65504.0f), 65504.0f),
                                          fminf(fmaxf(f[2 * i + 1], -65504.0f), 65504.0f));
      o[i] = *reinterpret_cast<const uint32_t*>(&h);
    }
    return out;
  }
};

template <>
struct TileOperands<ExpertFormat::bf16> {
  using Input = bf16;
  static constexpr int kMaxChunksInFlight = 4;  // 64 bytes each
  struct Chunk {
    uint4 g_lo, g8_lo, g_hi, g8_hi;  // rows g and g + 8, columns 8 q .. and 32 + 8 q ..
  };
  const bf16 *row_g, *row_g8;
  int cols, q;

  __device__ TileOperands(const ExpertTile& t, int lane) : cols(t.cols), q(lane % 4) {
    const int g = lane / 4;
    int first, second;  // rows of the expert's matrix, the last one repeated past its end
    if (t.order == TileRows::gate_up_pairs) {
      const int width = t.rows / 2, out = min(kTileRows / 2 * t.tile + g, width - 1);
      first = out, second = width + out;
    } else {
      first = min(kTileRows * t.tile + g, t.rows - 1), second = min(kTileRows * t.tile + g + 8, t.rows - 1);
    }
    const bf16* expert = reinterpret_cast<const bf16*>(t.codes) + size_t(t.expert) * t.rows * t.cols;
    row_g = expert + size_t(first) * t.cols, row_g8 = expert + size_t(second) * t.cols;
  }
  __device__ uint4 piece(const bf16* row, int col) const {
    return col < cols ? __ldcs(reinterpret_cast<const uint4*>(row + col)) : uint4{};
  }
  __device__ Chunk load(int chunk) const {
    const int lo = kTileColumns * chunk + 8 * q, hi = lo + 32;
    return {piece(row_g, lo), piece(row_g8, lo), piece(row_g, hi), piece(row_g8, hi)};
  }
  __device__ static void multiply(const Chunk& c, const Input* x, int lane, float (&acc)[4]) {
    const ChunkInputs in(x, lane);
    mma_step<ExpertFormat::bf16>(acc, {c.g_lo.x, c.g8_lo.x, c.g_lo.y, c.g8_lo.y}, in.lo.x, in.lo.y, acc);
    mma_step<ExpertFormat::bf16>(acc, {c.g_lo.z, c.g8_lo.z, c.g_lo.w, c.g8_lo.w}, in.lo.z, in.lo.w, acc);
    mma_step<ExpertFormat::bf16>(acc, {c.g_hi.x, c.g8_hi.x, c.g_hi.y, c.g8_hi.y}, in.hi.x, in.hi.y, acc);
    mma_step<ExpertFormat::bf16>(acc, {c.g_hi.z, c.g8_hi.z, c.g_hi.w, c.g8_hi.w}, in.hi.z, in.hi.w, acc);
  }
  __device__ static uint4 widen(const uint4& raw) { return raw; }
};

}  // namespace ultraserve::gpu
