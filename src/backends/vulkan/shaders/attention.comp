#version 450
// Causal attention (scale 1) for one (token, head) query per workgroup, over keys lo..pos
// of its KV head: keys before `start` come from the cache store (a ring of `capacity`
// slots on sliding layers, 0 = linear), the rest from this step's pending rows. Keys go
// in tiles of 64 with a running maximum (online softmax), so any context length runs
// in fixed shared memory; head_dim <= 512.
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer Qb { float Q[]; };
layout(std430, binding = 1) buffer Ob { float O[]; };
layout(std430, binding = 2) readonly buffer KSb { float KS[]; };
layout(std430, binding = 3) readonly buffer VSb { float VS[]; };
layout(std430, binding = 4) readonly buffer KPb { float KP[]; };
layout(std430, binding = 5) readonly buffer VPb { float VP[]; };
layout(push_constant) uniform P {
  uint n_q, heads, group, hd, start, capacity, width, window, q_off, q_stride, o_off, o_stride;
} p;
#include "common.glsl"
const uint TILE = 64u, MAXD = 512u, PER = MAXD / 64u;
shared float qs[MAXD];
shared float ps[TILE];
shared float red[64];

// Element offset of key/value position kp's head row, and whether it is in the store.
uint kv_index(uint kp, uint head_off, out bool pending) {
  pending = kp >= p.start;
  if (pending) return (kp - p.start) * p.width + head_off;
  const uint slot = p.capacity != 0u ? kp % p.capacity : kp;
  return slot * p.width + head_off;
}

float reduce_max(float v, uint tid) {
  red[tid] = v;
  barrier();
  for (uint w = 32u; w > 0u; w >>= 1) {
    if (tid < w) red[tid] = max(red[tid], red[tid + w]);
    barrier();
  }
  const float r = red[0];
  barrier();
  return r;
}
float reduce_sum(float v, uint tid) {
  red[tid] = v;
  barrier();
  for (uint w = 32u; w > 0u; w >>= 1) {
    if (tid < w) red[tid] += red[tid + w];
    barrier();
  }
  const float r = red[0];
  barrier();
  return r;
}

void main() {
  const uint qi = group_index(), tid = gl_LocalInvocationID.x;
  if (qi >= p.n_q) return;
  const uint t = qi / p.heads, hh = qi % p.heads, head_off = (hh / p.group) * p.hd;
  const uint pos = p.start + t, lo = p.window > 0u && pos + 1u > p.window ? pos + 1u - p.window : 0u;
  const uint qb = p.q_off + qi * p.q_stride;
  for (uint d = tid; d < p.hd; d += 64u) qs[d] = Q[qb + d];
  barrier();
  float m = -1.0 / 0.0, l = 0.0;
  float acc[PER];
  for (uint i = 0u; i < PER; ++i) acc[i] = 0.0;
  for (uint k0 = lo; k0 <= pos; k0 += TILE) {
    const uint kp = k0 + tid;
    float s = -1.0 / 0.0;
    if (kp <= pos) {
      bool pend;
      const uint kb = kv_index(kp, head_off, pend);
      s = 0.0;
      if (pend) for (uint d = 0u; d < p.hd; ++d) s += qs[d] * KP[kb + d];
      else for (uint d = 0u; d < p.hd; ++d) s += qs[d] * KS[kb + d];
    }
    const float m_new = max(m, reduce_max(s, tid));
    const float corr = exp(m - m_new);
    const float e = kp <= pos ? exp(s - m_new) : 0.0;
    ps[tid] = e;
    l = l * corr + reduce_sum(e, tid);  // reduce_sum's barriers also publish ps
    m = m_new;
    const uint nk = min(TILE, pos + 1u - k0);
    for (uint i = 0u; i < PER; ++i) {
      const uint d = tid + 64u * i;
      if (d >= p.hd) break;
      float a = acc[i] * corr;
      for (uint k = 0u; k < nk; ++k) {
        bool pend;
        const uint vb = kv_index(k0 + k, head_off, pend);
        a += ps[k] * (pend ? VP[vb + d] : VS[vb + d]);
      }
      acc[i] = a;
    }
    barrier();
  }
  const uint ob = p.o_off + qi * p.o_stride;
  for (uint i = 0u; i < PER; ++i) {
    const uint d = tid + 64u * i;
    if (d < p.hd) O[ob + d] = acc[i] / l;
  }
}
