#version 450
// Elementwise ops on [rows, cols] views: 0 a *= s; 1 a = a * w[j] * s; 2 a += b;
// 3 a = s * tanh(a / s); 4 a = gelu_tanh(a) * b.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 64) in;
layout(std430, binding = 0) buffer Ab { float A[]; };
layout(std430, binding = 1) readonly buffer Bb { float B[]; };
layout(std430, binding = 2) readonly buffer Wb { float Wt[]; };
layout(push_constant) uniform P { uint op, rows, cols, a_off, a_stride, b_off, b_stride; float s; } p;
#include "common.glsl"
void main() {
  const uint i = group_index() * 64u + gl_LocalInvocationID.x;
  if (i >= p.rows * p.cols) return;
  const uint r = i / p.cols, j = i % p.cols, ai = p.a_off + r * p.a_stride + j;
  const float a = A[ai];
  if (p.op == 0u) A[ai] = a * p.s;
  else if (p.op == 1u) A[ai] = a * Wt[j] * p.s;
  else if (p.op == 2u) A[ai] = a + B[p.b_off + r * p.b_stride + j];
  else if (p.op == 3u) A[ai] = p.s * safe_tanh(a / p.s);
  else {
    const float g = 0.5 * a * (1.0 + safe_tanh(0.7978845608028654 * (a + 0.044715 * a * a * a)));
    A[ai] = g * B[p.b_off + r * p.b_stride + j];
  }
}
