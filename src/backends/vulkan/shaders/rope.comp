#version 450
// Rotate-half RoPE: row r (token r / heads) rotates pairs (j, j + half) by the angle whose
// cos/sin the host computed for that token's position (T: [tokens][half] cos, then sin).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 64) in;
layout(std430, binding = 0) buffer Xb { float X[]; };
layout(std430, binding = 1) readonly buffer Tb { float T[]; };
layout(push_constant) uniform P { uint rows, half_, heads, x_off, x_stride, t_off, n_tok; } p;
#include "common.glsl"
void main() {
  const uint i = group_index() * 64u + gl_LocalInvocationID.x;
  if (i >= p.rows * p.half_) return;
  const uint r = i / p.half_, j = i % p.half_, t = r / p.heads;
  const float cs = T[p.t_off + t * p.half_ + j], sn = T[p.t_off + (p.n_tok + t) * p.half_ + j];
  const uint b = p.x_off + r * p.x_stride;
  const float a = X[b + j], c = X[b + j + p.half_];
  X[b + j] = a * cs - c * sn;
  X[b + j + p.half_] = c * cs + a * sn;
}
