#version 450
// flag[0] |= 1 if any element of the [rows, cols] view is NaN or +-Inf.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer Xb { float X[]; };
layout(std430, binding = 1) buffer Fb { uint flag[]; };
layout(push_constant) uniform P { uint rows, cols, x_off, x_stride, f_off; } p;
#include "common.glsl"
void main() {
  const uint i = group_index() * 64u + gl_LocalInvocationID.x;
  if (i >= p.rows * p.cols) return;
  const float v = X[p.x_off + (i / p.cols) * p.x_stride + i % p.cols];
  if (isnan(v) || isinf(v)) atomicOr(flag[p.f_off], 1u);
}
