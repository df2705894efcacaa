#version 450
// MoE: out[t, j] = sum_k w[t, k] * eo[t * K + k, j], summed in k order.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer Eb { float E[]; };
layout(std430, binding = 1) readonly buffer Wb { float Wk[]; };
layout(std430, binding = 2) buffer Ob { float O[]; };
layout(push_constant) uniform P { uint rows, cols, K, e_off, e_stride, w_off, o_off, o_stride; } p;
#include "common.glsl"
void main() {
  const uint i = group_index() * 64u + gl_LocalInvocationID.x;
  if (i >= p.rows * p.cols) return;
  const uint t = i / p.cols, j = i % p.cols;
  float s = 0.0;
  for (uint k = 0u; k < p.K; ++k) s += Wk[p.w_off + t * p.K + k] * E[p.e_off + (t * p.K + k) * p.e_stride + j];
  O[p.o_off + t * p.o_stride + j] = s;
}
