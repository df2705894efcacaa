#version 450
// y[t, o] = sum_i W[row0 + o, i] x[t, i] (MATMUL), or out[t] = W[tokens[t]] * scale (EMBED).
// MATMUL: one workgroup per output row and tile of NT tokens: each weight chunk is
// decoded once and dotted with NT activation rows; partial sums meet in shared memory.
// EMBED: one workgroup per token, each thread writes whole chunks of the row.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer Wb { uint W[]; };
layout(std430, binding = 1) readonly buffer Xb { float X[]; };   // x (MATMUL) / int tokens (EMBED)
layout(std430, binding = 2) buffer Yb { float Y[]; };
layout(push_constant) uniform P {
  uint row_bytes, row0, n_in, n_out, n_tok, x_off, x_stride, y_off, y_stride;
  float scale;
} p;
#include "common.glsl"
#include "dequant.glsl"

#ifdef EMBED
void main() {
  const uint t = group_index();
  if (t >= p.n_tok) return;
  const uint tok = floatBitsToUint(X[p.x_off + t]);
  const uint row = tok * p.row_bytes, nch = (p.n_in + 31u) / 32u;
  float v[32];
  for (uint c = gl_LocalInvocationID.x; c < nch; c += 64u) {
    dequant32(row, c, p.n_in, v);
    for (uint l = 0u; l < 32u; ++l)
      if (32u * c + l < p.n_in) Y[p.y_off + t * p.y_stride + 32u * c + l] = v[l] * p.scale;
  }
}
#else
// 8 output rows per workgroup, 8 lanes per row (each lane takes every 8th chunk of the
// row), NT tokens: the lanes' partial sums meet once in shared memory. Each token's sum
// is formed the same way whatever the batch, so decode equals prefill bit for bit.
const uint NT = 8u, ROWS = 8u, LANES = 8u;
shared float part[NT][ROWS][LANES];
void main() {
  const uint tid = gl_LocalInvocationID.x, r = tid / LANES, lane = tid % LANES;
  const uint o = group_index() * ROWS + r;
  const uint t0 = gl_WorkGroupID.z * NT, nt = min(NT, p.n_tok - t0);
  float acc[NT];
  for (uint k = 0u; k < NT; ++k) acc[k] = 0.0;
  if (o < p.n_out) {
    const uint row = (p.row0 + o) * p.row_bytes, nch = (p.n_in + 31u) / 32u;
    float v[32];
    // Constant loop bounds (whole chunks, all NT tokens) keep v and acc in registers;
    // the tail chunk of a float row and a short token tile take the general loop.
    for (uint c = lane; c < nch; c += LANES) {
      dequant32(row, c, p.n_in, v);
      const uint lim = min(32u, p.n_in - 32u * c);
      const uint xb0 = p.x_off + t0 * p.x_stride + 32u * c;
      if (lim == 32u && nt == NT) {
        [[unroll]] for (uint k = 0u; k < NT; ++k) {
          const uint xb = xb0 + k * p.x_stride;
          float s = 0.0;
          [[unroll]] for (uint l = 0u; l < 32u; ++l) s += v[l] * X[xb + l];
          acc[k] += s;
        }
      } else {
        for (uint k = 0u; k < nt; ++k) {
          const uint xb = xb0 + k * p.x_stride;
          float s = 0.0;
          for (uint l = 0u; l < lim; ++l) s += v[l] * X[xb + l];
          acc[k] += s;
        }
      }
    }
  }
  for (uint k = 0u; k < NT; ++k) part[k][r][lane] = acc[k];
  barrier();
  const uint k = tid / ROWS, rr = tid % ROWS, oo = group_index() * ROWS + rr;
  if (k < nt && oo < p.n_out) {
    float s = 0.0;
    for (uint l = 0u; l < LANES; ++l) s += part[k][rr][l];
    Y[p.y_off + (t0 + k) * p.y_stride + oo] = s;
  }
}
#endif
