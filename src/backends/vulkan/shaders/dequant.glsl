// Weight rows read in place from the uploaded tensor bytes (W, a uint array: blocks sit
// at any even byte offset), in chunks of 32 elements. One decoder per GGML block layout,
// the same math as kernels/blocks.h: chunk c of a row is elements [32c, 32c + 32).
// Compile with exactly one of TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q4_0, TYPE_Q4_1,
// TYPE_Q5_0, TYPE_Q5_1, TYPE_Q8_0, TYPE_Q4_K, TYPE_Q5_K, TYPE_Q6_K defined.

uint rd8(uint b) { return (W[b >> 2] >> ((b & 3u) * 8u)) & 0xFFu; }
uint rd16(uint b) { return (W[b >> 2] >> ((b & 2u) * 8u)) & 0xFFFFu; }  // b even
uint rd32(uint b) {  // b even
  return (b & 2u) == 0u ? W[b >> 2] : ((W[b >> 2] >> 16) | (W[(b >> 2) + 1u] << 16));
}
float f16(uint b) { return unpackHalf2x16(rd16(b)).x; }
int s8(uint w, uint i) { return bitfieldExtract(int(w), int(i * 8u), 8); }
uint u8(uint w, uint i) { return (w >> (i * 8u)) & 0xFFu; }

// Scale and min of sub-block j of the 12 packed bytes at s (llama.cpp's get_scale_min_k4).
void scale_min_k4(uint j, uint s, out float sc, out float mn) {
  if (j < 4u) {
    sc = float(rd8(s + j) & 63u);
    mn = float(rd8(s + j + 4u) & 63u);
  } else {
    sc = float((rd8(s + j + 4u) & 0xFu) | ((rd8(s + j - 4u) >> 6) << 4));
    mn = float((rd8(s + j + 4u) >> 4) | ((rd8(s + j) >> 6) << 4));
  }
}

// v[l] = element 32c + l of the row starting at byte `row` (n elements; float types mask
// the tail, block types have whole blocks).
void dequant32(uint row, uint c, uint n, out float v[32]) {
#if defined(TYPE_F32)
  for (uint l = 0u; l < 32u; ++l) {
    const uint i = 32u * c + l;
    v[l] = i < n ? uintBitsToFloat(W[(row >> 2) + i]) : 0.0;
  }
#elif defined(TYPE_F16)
  for (uint l = 0u; l < 32u; ++l) {
    const uint i = 32u * c + l;
    v[l] = i < n ? f16(row + 2u * i) : 0.0;
  }
#elif defined(TYPE_BF16)
  for (uint l = 0u; l < 32u; ++l) {
    const uint i = 32u * c + l;
    v[l] = i < n ? uintBitsToFloat(rd16(row + 2u * i) << 16) : 0.0;
  }
#elif defined(TYPE_Q4_0)
  const uint b = row + 18u * c;
  const float d = f16(b);
  for (uint w = 0u; w < 4u; ++w) {
    const uint q = rd32(b + 2u + 4u * w);
    for (uint i = 0u; i < 4u; ++i) {
      const uint x = u8(q, i);
      v[4u * w + i] = float(int(x & 0xFu) - 8) * d;
      v[16u + 4u * w + i] = float(int(x >> 4) - 8) * d;
    }
  }
#elif defined(TYPE_Q4_1)
  const uint b = row + 20u * c;
  const float d = f16(b), m = f16(b + 2u);
  for (uint w = 0u; w < 4u; ++w) {
    const uint q = W[(b + 4u) / 4u + w];
    for (uint i = 0u; i < 4u; ++i) {
      const uint x = u8(q, i);
      v[4u * w + i] = float(x & 0xFu) * d + m;
      v[16u + 4u * w + i] = float(x >> 4) * d + m;
    }
  }
#elif defined(TYPE_Q5_0)
  const uint b = row + 22u * c;
  const float d = f16(b);
  const uint qh = rd32(b + 2u);
  for (uint w = 0u; w < 4u; ++w) {
    const uint q = rd32(b + 6u + 4u * w);
    for (uint i = 0u; i < 4u; ++i) {
      const uint j = 4u * w + i, x = u8(q, i);
      v[j] = float(int((x & 0xFu) | (((qh >> j) & 1u) << 4)) - 16) * d;
      v[j + 16u] = float(int((x >> 4) | (((qh >> (j + 16u)) & 1u) << 4)) - 16) * d;
    }
  }
#elif defined(TYPE_Q5_1)
  const uint b = row + 24u * c;
  const float d = f16(b), m = f16(b + 2u);
  const uint qh = W[(b + 4u) / 4u];
  for (uint w = 0u; w < 4u; ++w) {
    const uint q = W[(b + 8u) / 4u + w];
    for (uint i = 0u; i < 4u; ++i) {
      const uint j = 4u * w + i, x = u8(q, i);
      v[j] = float((x & 0xFu) | (((qh >> j) & 1u) << 4)) * d + m;
      v[j + 16u] = float((x >> 4) | (((qh >> (j + 16u)) & 1u) << 4)) * d + m;
    }
  }
#elif defined(TYPE_Q8_0)
  const uint b = row + 34u * c;
  const float d = f16(b);
  for (uint w = 0u; w < 8u; ++w) {
    const uint q = rd32(b + 2u + 4u * w);
    for (uint i = 0u; i < 4u; ++i) v[4u * w + i] = float(s8(q, i)) * d;
  }
#elif defined(TYPE_Q4_K)
  // Super-block c / 8 (144 bytes); chunk s = c % 8 is elements 32s.. : the low (s even) or
  // high (s odd) nibbles of qs[32 (s/2) ..], scale/min pair s.
  const uint b = row + 144u * (c >> 3), s = c & 7u;
  const float d = f16(b), dmin = f16(b + 2u);
  float sc, mn;
  scale_min_k4(s, b + 4u, sc, mn);
  const float d1 = d * sc, m1 = dmin * mn;
  const uint qs = b + 16u + 32u * (s >> 1), sh = 4u * (s & 1u);
  for (uint w = 0u; w < 8u; ++w) {
    const uint q = W[qs / 4u + w];
    for (uint i = 0u; i < 4u; ++i) v[4u * w + i] = d1 * float((u8(q, i) >> sh) & 0xFu) - m1;
  }
#elif defined(TYPE_Q5_K)
  const uint b = row + 176u * (c >> 3), s = c & 7u;
  const float d = f16(b), dmin = f16(b + 2u);
  float sc, mn;
  scale_min_k4(s, b + 4u, sc, mn);
  const float d1 = d * sc, m1 = dmin * mn;
  const uint qs = b + 48u + 32u * (s >> 1), sh = 4u * (s & 1u);
  for (uint w = 0u; w < 8u; ++w) {
    const uint q = W[qs / 4u + w], h = W[(b + 16u) / 4u + w];
    for (uint i = 0u; i < 4u; ++i)
      v[4u * w + i] = d1 * float(((u8(q, i) >> sh) & 0xFu) + 16u * ((u8(h, i) >> s) & 1u)) - m1;
  }
#elif defined(TYPE_Q6_K)
  // Super-block c / 8 (210 bytes); chunk s = 4n + i is elements 128n + 32i + l.
  const uint b = row + 210u * (c >> 3), s = c & 7u, n2 = s >> 2, i4 = s & 3u;
  const float d = f16(b + 208u);
  const uint ql = b + 64u * n2 + 32u * (i4 & 1u), qh = b + 128u + 32u * n2, sh = i4 < 2u ? 0u : 4u;
  const uint scb = b + 192u + 8u * n2 + 2u * i4;
  const float sc0 = d * float(bitfieldExtract(int(rd8(scb)), 0, 8));
  const float sc1 = d * float(bitfieldExtract(int(rd8(scb + 1u)), 0, 8));
  for (uint w = 0u; w < 8u; ++w) {
    const uint lo = rd32(ql + 4u * w), hi = rd32(qh + 4u * w);
    for (uint i = 0u; i < 4u; ++i) {
      const uint l = 4u * w + i;
      const int q = int(((u8(lo, i) >> sh) & 0xFu) | (((u8(hi, i) >> (2u * i4)) & 3u) << 4)) - 32;
      v[l] = (l < 16u ? sc0 : sc1) * float(q);
    }
  }
#else
#error "no weight TYPE_ defined"
#endif
}
