#version 450
// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w (has_w = 0: no weight); one workgroup per
// row; out may alias x (each thread reads and writes its own elements).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 128) in;
layout(std430, binding = 0) buffer Xb { float X[]; };
layout(std430, binding = 1) buffer Ob { float O[]; };
layout(std430, binding = 2) readonly buffer Wb { float Wt[]; };
layout(push_constant) uniform P { uint rows, n, x_off, x_stride, o_off, o_stride, has_w; float eps; } p;
#include "common.glsl"
shared float part[128];
void main() {
  const uint r = group_index(), tid = gl_LocalInvocationID.x;
  if (r >= p.rows) return;
  const uint xb = p.x_off + r * p.x_stride, ob = p.o_off + r * p.o_stride;
  float ss = 0.0;
  for (uint i = tid; i < p.n; i += 128u) ss += X[xb + i] * X[xb + i];
  part[tid] = ss;
  barrier();
  for (uint w = 64u; w > 0u; w >>= 1) {
    if (tid < w) part[tid] += part[tid + w];
    barrier();
  }
  const float inv = 1.0 / sqrt(part[0] / float(p.n) + p.eps);
  for (uint i = tid; i < p.n; i += 128u) O[ob + i] = p.has_w != 0u ? X[xb + i] * inv * Wt[i] : X[xb + i] * inv;
}
