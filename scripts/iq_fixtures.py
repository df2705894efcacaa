#!/usr/bin/env python3
"""Fixture maker for tests/test_iq.cc (run by scripts/make-iq-fixtures.sh; needs the llama.cpp peer).

  iq_fixtures.py imatrix-dat MODEL.gguf OUT.dat
      a legacy-format (.dat) importance matrix for every 2-D weight of MODEL, with smooth
      deterministic values; only for making fixtures of the types llama-quantize refuses to write
      without one (IQ2_*, IQ1_*). g4's own `g4 imatrix` replaces it where the model runs.
  iq_fixtures.py subset IN.gguf OUT.gguf TYPE TENSOR...
      copies TENSORs (which must be of TYPE) of IN into a small GGUF with no other metadata.
  iq_fixtures.py expect OUT.json FIXTURE.gguf...
      dequantizes every tensor of each FIXTURE with llama.cpp's own to_float (libggml-base.so,
      ggml_get_type_traits) and writes per tensor: FNV-1a 64 of the f32 bits, and the first 64 values.

Runs under the peer's glibc (libggml-base needs it): see make-iq-fixtures.sh. No numpy.
"""
import ctypes
import json
import math
import os
import struct
import sys

GGML = {"F32": 0, "F16": 1, "Q8_0": 8, "Q4_K": 12, "Q6_K": 14, "IQ2_XXS": 16, "IQ2_XS": 17, "IQ3_XXS": 18,
        "IQ1_S": 19, "IQ4_NL": 20, "IQ3_S": 21, "IQ2_S": 22, "IQ4_XS": 23, "BF16": 30, "IQ1_M": 29,
        "TQ1_0": 34, "TQ2_0": 35, "MXFP4": 39}
BLOCK = {0: (1, 4), 1: (1, 2), 30: (1, 2), 8: (32, 34), 12: (256, 144), 14: (256, 210), 16: (256, 66),
         17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82), 23: (256, 136),
         29: (256, 56), 34: (256, 54), 35: (256, 66), 39: (32, 17), 2: (32, 18), 3: (32, 20), 6: (32, 22),
         7: (32, 24), 10: (256, 84), 11: (256, 110), 13: (256, 176), 24: (1, 1), 26: (1, 4)}


def read_gguf(path):
    b = open(path, "rb").read()
    pos = 0

    def rd(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, b, pos)
        pos += struct.calcsize("<" + fmt)
        return v[0] if len(v) == 1 else v

    def rstr():
        nonlocal pos
        n = rd("Q")
        s = b[pos:pos + n].decode()
        pos += n
        return s

    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

    def rval(t):
        if t in scalar:
            return rd(scalar[t])
        if t == 8:
            return rstr()
        if t == 9:
            et, n = rd("I"), rd("Q")
            return [rval(et) for _ in range(n)]
        raise ValueError(f"{path}: kv type {t}")

    assert b[:4] == b"GGUF", path
    pos = 4
    _ver, n_t, n_kv = rd("I"), rd("Q"), rd("Q")
    kv = {}
    for _ in range(n_kv):
        k = rstr()
        kv[k] = rval(rd("I"))
    tensors = []
    for _ in range(n_t):
        name = rstr()
        nd = rd("I")
        dims = [rd("Q") for _ in range(nd)]
        t, off = rd("I"), rd("Q")
        tensors.append({"name": name, "dims": dims, "type": t, "off": off})
    align = kv.get("general.alignment", 32)
    data = (pos + align - 1) // align * align
    for t in tensors:
        be, bb = BLOCK[t["type"]]
        n = math.prod(t["dims"])
        t["nbytes"] = n // be * bb
        t["data"] = b[data + t["off"]:data + t["off"] + t["nbytes"]]
    return kv, tensors


def write_gguf(path, tensors, kv_str):
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv_str)))
    for k, v in kv_str.items():
        kb, vb = k.encode(), v.encode()
        out += struct.pack("<Q", len(kb)) + kb + struct.pack("<IQ", 8, len(vb)) + vb
    off = 0
    offs = []
    for t in tensors:
        nb = t["name"].encode()
        out += struct.pack("<Q", len(nb)) + nb + struct.pack("<I", len(t["dims"]))
        out += b"".join(struct.pack("<Q", d) for d in t["dims"])
        out += struct.pack("<IQ", t["type"], off)
        offs.append(off)
        off = (off + len(t["data"]) + 31) // 32 * 32
    out += b"\0" * ((-len(out)) % 32)
    for t, o in zip(tensors, offs):
        out += t["data"]
        out += b"\0" * ((-len(out)) % 32)
    open(path, "wb").write(out)


class Traits(ctypes.Structure):
    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64), ("blck_size_interleave", ctypes.c_int64),
                ("type_size", ctypes.c_size_t), ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                ("from_float_ref", ctypes.c_void_p)]


def llama_to_float(ggml_type, data, n):
    root = os.environ.get("LLAMA_PEER", "/tmp/llama-cpp-peer")
    lib = ctypes.CDLL(f"{root}/usr/lib/x86_64-linux-gnu/libggml-base.so.0")
    lib.ggml_get_type_traits.restype = ctypes.POINTER(Traits)
    tr = lib.ggml_get_type_traits(ggml_type).contents
    fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(tr.to_float)
    src = ctypes.create_string_buffer(bytes(data), len(data))
    dst = (ctypes.c_float * n)()
    fn(src, dst, n)
    return bytes(dst)


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for x in data:
        h = ((h ^ x) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    cmd = sys.argv[1]
    if cmd == "imatrix-dat":
        _, tensors = read_gguf(sys.argv[2])
        ents = [t for t in tensors if t["name"].endswith(".weight") and len(t["dims"]) >= 2]
        out = bytearray(struct.pack("<i", len(ents)))
        for t in ents:
            nb = t["name"].encode()
            ncol = t["dims"][0]
            vals = [0.5 + 1.5 * (0.5 + 0.5 * math.sin(0.37 * j + 0.11 * len(nb))) for j in range(ncol)]
            out += struct.pack("<i", len(nb)) + nb + struct.pack("<ii", 1, ncol) + struct.pack(f"<{ncol}f", *vals)
        ds = b"synthetic"
        out += struct.pack("<i", 1) + struct.pack("<i", len(ds)) + ds
        open(sys.argv[3], "wb").write(out)
    elif cmd == "imatrix-gguf":
        # The same importance matrix in llama-imatrix's GGUF format: NAME.in_sum2 [n_in, 1] and
        # NAME.counts [1], with counts 4 and sums 4x the .dat values (exact: the means are the same floats).
        b = open(sys.argv[2], "rb").read()
        pos = 0
        n = struct.unpack_from("<i", b, pos)[0]; pos += 4
        ts = []
        for _ in range(n):
            ln = struct.unpack_from("<i", b, pos)[0]; pos += 4
            name = b[pos:pos + ln].decode(); pos += ln
            ncall, nval = struct.unpack_from("<ii", b, pos); pos += 8
            vals = struct.unpack_from(f"<{nval}f", b, pos); pos += 4 * nval
            sums = struct.pack(f"<{nval}f", *[v / ncall * 4 for v in vals])
            ts.append({"name": name + ".in_sum2", "dims": [nval, 1], "type": 0, "data": sums})
            ts.append({"name": name + ".counts", "dims": [1, 1], "type": 0, "data": struct.pack("<f", 4.0)})
        write_gguf(sys.argv[3], ts, {"general.type": "imatrix"})
    elif cmd == "random":
        # random.gguf: per type, 64 blocks of random bytes (every grid entry and sign pattern is
        # likely hit), the f16 scale set to a random value in [-2, 2) (IQ1_M: its packed scale;
        # MXFP4: an exponent in 100..140), so that no value is inf or NaN.
        import random
        rng = random.Random(20)
        ts = []
        for name in sys.argv[3:]:
            ty = GGML[name]
            be, bb = BLOCK[ty]
            nb = 64 * 256 // be
            data = bytearray(rng.getrandbits(8) for _ in range(nb * bb))
            for k in range(nb):
                blk = memoryview(data)[k * bb:(k + 1) * bb]
                h = struct.unpack("<H", struct.pack("<e", rng.uniform(-2, 2)))[0]
                if name == "MXFP4":
                    blk[0] = rng.randrange(100, 141)
                elif name == "IQ1_M":
                    for w in range(4):  # the top nibble of scale word w is nibble w of the f16
                        o = 48 + 2 * w
                        v = struct.unpack_from("<H", blk, o)[0] & 0x0FFF | ((h >> (4 * w)) & 0xF) << 12
                        struct.pack_into("<H", blk, o, v)
                elif name in ("TQ1_0", "TQ2_0"):
                    struct.pack_into("<H", blk, bb - 2, h)
                else:
                    struct.pack_into("<H", blk, 0, h)
            ts.append({"name": f"random.{name}", "dims": [nb * be], "type": ty, "data": bytes(data)})
        write_gguf(sys.argv[2], ts, {"general.name": "random blocks of each IQ type"})
    elif cmd == "subset":
        _, tensors = read_gguf(sys.argv[2])
        want = sys.argv[5:]
        ty = GGML[sys.argv[4]]
        by = {t["name"]: t for t in tensors}
        sel = []
        for w in want:
            t = by[w]
            if t["type"] != ty:
                sys.exit(f"{sys.argv[2]}: {w} is type {t['type']}, not {sys.argv[4]}")
            sel.append(t)
        write_gguf(sys.argv[3], sel, {"general.name": f"llama-quantize {sys.argv[4]} fixture"})
    elif cmd == "expect":
        res = {}
        for path in sys.argv[3:]:
            _, tensors = read_gguf(path)
            ent = {}
            for t in tensors:
                n = math.prod(t["dims"])
                f = llama_to_float(t["type"], t["data"], n)
                head = list(struct.unpack_from("<64f", f))
                ent[t["name"]] = {"type": t["type"], "n": n, "fnv1a64": f"{fnv1a64(f):016x}",
                                  "head": [struct.unpack("<I", struct.pack("<f", v))[0] for v in head]}
            res[os.path.basename(path)] = ent
        json.dump(res, open(sys.argv[2], "w"), indent=1)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
