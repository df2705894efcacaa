// Malformed input never crashes, hangs or allocates more than the file: every case
// below must be one clean g4::Error that names what is wrong.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "model/model.h"
#include "test_util.h"
#include "util/error.h"
#include "util/json.h"
#include "util/mapped_file.h"

namespace g4 {
namespace {
namespace fs = std::filesystem;

// Little-endian byte builder for hand-made (and deliberately broken) files.
struct Bytes {
  std::string b;
  template <typename T> Bytes& put(T v) { b.append(reinterpret_cast<const char*>(&v), sizeof v); return *this; }
  Bytes& str(const std::string& s) { put<uint64_t>(s.size()); b += s; return *this; }
  Bytes& raw(const std::string& s) { b += s; return *this; }
  void save(const std::string& path) const { std::ofstream(path, std::ios::binary) << b; }
};

using test::error_of;

#define EXPECT_ERROR_HAS(expr, needle)                                           \
  do {                                                                           \
    const std::string msg_ = error_of([&] { (void)(expr); });                    \
    EXPECT_NE(msg_.find(needle), std::string::npos) << "message was: " << msg_; \
  } while (0)

// ---------- safetensors ----------

Bytes st_file(const std::string& header, const std::string& data) {
  Bytes b;
  b.put<uint64_t>(header.size()).raw(header).raw(data);
  return b;
}

TEST(BadSafetensors, EachCaseIsACleanError) {
  test::ScratchDir d;
  const std::string p = d.str("x.safetensors");
  auto check = [&](const Bytes& b, const char* needle) {
    b.save(p);
    EXPECT_ERROR_HAS(read_safetensors(p), needle);
  };
  check(Bytes().raw("abc"), "too short");
  check(Bytes().put<uint64_t>(1ull << 40).raw("{}"), "runs past the end");
  check(st_file("{not json", ""), "invalid JSON");
  check(st_file("[1,2]", ""), "not a JSON object");
  check(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                std::string(8, '\0')), "duplicate JSON key");
  check(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                std::string(12, '\0')), "overlaps");
  check(st_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(8, '\0')), "past the data buffer");
  check(st_file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", std::string(8, '\0')),
        "overflows");
  check(st_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')), "needs 12 bytes");
  check(st_file(R"({"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')), "unsupported dtype");
  check(st_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", std::string(8, '\0')), "negative");
  check(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", std::string(12, '\0')), "contiguous");
  check(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", std::string(12, '\0')), "trailing");
  check(st_file(R"({"a":{"dtype":"F32","shape":[2]}})", std::string(8, '\0')), "data_offsets");
  check(st_file(std::string(300, '[') + std::string(300, ']'), ""), "nested deeper");
}

TEST(BadSafetensors, TruncatedRealFile) {
  test::ScratchDir d;
  const auto src = read_text_file(test::fixture("tiny-e/model.safetensors"));
  Bytes{src.substr(0, src.size() - 1000)}.save(d.str("t.safetensors"));
  EXPECT_ERROR_HAS(read_safetensors(d.str("t.safetensors")), "truncated");
}

TEST(BadModelDir, MissingShardNamesIt) {
  test::ScratchDir d;
  for (const auto& e : fs::directory_iterator(test::model_dir("brown-mini")))
    if (e.path().filename() != "model-00002-of-00002.safetensors") fs::copy(e.path(), d.path / e.path().filename());
  EXPECT_ERROR_HAS(open_model(d.str()), "model-00002-of-00002.safetensors' listed in model.safetensors.index.json is missing");
}

std::string joined_errors(const Model& m) {
  std::string s;
  for (const auto& e : m.errors) s += e.tensor + ": " + e.message + "\n";
  return s;
}

TEST(BadModelDir, PleTensorsDeletedIsAnErrorNamingThem) {
  test::ScratchDir d;
  test::write_variant(test::fixture("tiny-e"), d.str(), [](auto& ts) {
    std::erase_if(ts, [](const SafetensorsOut& t) { return t.name.find("per_layer") != std::string::npos; });
  });
  Model m = open_model(d.str());
  EXPECT_FALSE(m.valid());
  const auto errs = joined_errors(m);
  EXPECT_NE(errs.find("embed_tokens_per_layer.weight"), std::string::npos) << errs;
  EXPECT_NE(errs.find("per-layer embeddings"), std::string::npos) << errs;
  EXPECT_ERROR_HAS(load_model(d.str()), "failed validation");
}

TEST(BadModelDir, KEqVModelGivenAVProj) {
  test::ScratchDir d;
  test::write_variant(test::fixture("tiny-dense"), d.str(), [](auto& ts) {
    ts.push_back({"model.language_model.layers.5.self_attn.v_proj.weight", "BF16", {32, 64}, std::vector<uint8_t>(32 * 64 * 2)});
  });
  Model m = open_model(d.str());
  EXPECT_FALSE(m.valid());
  EXPECT_NE(joined_errors(m).find("attention_k_eq_v"), std::string::npos) << joined_errors(m);
}

TEST(BadModelDir, KProjOnKvSharedLayerIsAnErrorUnlessLenient) {
  test::ScratchDir d;
  test::write_variant(test::fixture("tiny-e"), d.str(), [](auto& ts) {
    ts.push_back({"model.language_model.layers.7.self_attn.k_proj.weight", "BF16", {64, 64}, std::vector<uint8_t>(64 * 64 * 2)});
  });
  Model m = open_model(d.str());
  EXPECT_FALSE(m.valid());
  EXPECT_NE(joined_errors(m).find("KV-shared"), std::string::npos) << joined_errors(m);
  EXPECT_TRUE(open_model(d.str(), LoadOptions{true}).valid());
}

TEST(BadModelDir, ConfigTensorMismatch) {
  test::ScratchDir d;
  test::write_variant(test::fixture("tiny-dense"), d.str(), nullptr, [](json& c) { c["text_config"]["intermediate_size"] = 96; });
  Model m = open_model(d.str());
  EXPECT_FALSE(m.valid());
  EXPECT_NE(joined_errors(m).find("but the config implies [96, 64]"), std::string::npos) << joined_errors(m);
}

TEST(BadModelDir, LayerScalarMissing) {
  test::ScratchDir d;
  test::write_variant(test::fixture("tiny-dense"), d.str(), [](auto& ts) {
    std::erase_if(ts, [](const SafetensorsOut& t) { return t.name == "model.language_model.layers.2.layer_scalar"; });
  });
  Model m = open_model(d.str());
  EXPECT_NE(joined_errors(m).find("layers.2.layer_scalar"), std::string::npos) << joined_errors(m);
}

TEST(BadConfig, GarbageAndWrongTypes) {
  test::ScratchDir d;
  fs::copy(test::fixture("tiny-dense/model.safetensors"), d.path / "model.safetensors");
  auto with_config = [&](const std::string& text) {
    std::ofstream(d.str("config.json")) << text;
    return error_of([&] { open_model(d.str()); });
  };
  EXPECT_NE(with_config("{\"text_config\": ").find("invalid JSON"), std::string::npos);
  EXPECT_NE(with_config("{\"text_config\": {\"hidden_size\": 64}}").find("required key"), std::string::npos);
  json c = json::parse(read_text_file(test::fixture("tiny-dense/config.json")));
  c["text_config"]["hidden_size"] = "64";
  EXPECT_NE(with_config(c.dump()).find("\"hidden_size\" must be an integer"), std::string::npos);
  c["text_config"]["hidden_size"] = -64;
  EXPECT_NE(with_config(c.dump()).find("hidden_size must be positive"), std::string::npos);
  c["text_config"]["hidden_size"] = 64;
  c["text_config"]["num_attention_heads"] = 3;
  EXPECT_NE(with_config(c.dump()).find("not a multiple"), std::string::npos);
  c["text_config"]["num_attention_heads"] = 4;
  c["text_config"]["per_layer_config"] = {{"99", {{"head_dim", 8}}}};
  EXPECT_NE(with_config(c.dump()).find("per_layer_config names layer 99"), std::string::npos);
  EXPECT_NE(error_of([&] { open_model(d.str("nope")); }).find("does not exist"), std::string::npos);
}

// ---------- GGUF ----------

// A minimal valid GGUF header with the given KV payload and tensor infos.
Bytes gguf(int64_t n_tensors, int64_t n_kv, const Bytes& body, uint32_t version = 3) {
  Bytes b;
  b.raw("GGUF").put<uint32_t>(version).put<int64_t>(n_tensors).put<int64_t>(n_kv).raw(body.b);
  return b;
}

TEST(BadGguf, EachCaseIsACleanError) {
  test::ScratchDir d;
  const std::string p = d.str("x.gguf");
  auto check = [&](const Bytes& b, const char* needle) {
    b.save(p);
    EXPECT_ERROR_HAS(read_gguf(p), needle);
  };
  check(Bytes().raw("GGU"), "truncated");
  check(Bytes().raw("GGML").put<uint32_t>(3), "not a GGUF file");
  check(gguf(0, 0, {}, 1), "version 1");
  check(gguf(0, 0, {}, 0x03000000), "byte-swapped");
  check(gguf(0, 1LL << 50, {}), "metadata count");
  check(gguf(1LL << 50, 0, {}), "tensor count");
  check(gguf(0, 1, Bytes().put<uint64_t>(1ull << 60).raw(std::string(16, 0))), "exceeds");                       // huge key length
  check(gguf(0, 1, Bytes().str("k").put<int32_t>(8).put<uint64_t>(1ull << 62)), "exceeds");  // huge string value
  check(gguf(0, 1, Bytes().str("k").put<int32_t>(9).put<int32_t>(4).put<uint64_t>(1ull << 61)), "claims");  // huge array
  check(gguf(0, 1, Bytes().str("k").put<int32_t>(9).put<int32_t>(9).put<uint64_t>(1)), "nested arrays");
  check(gguf(0, 1, Bytes().str("k").put<int32_t>(99).raw(std::string(16, 0))), "unknown value type");
  check(gguf(0, 2, Bytes().str("k").put<int32_t>(4).put<uint32_t>(1).str("k").put<int32_t>(4).put<uint32_t>(1)),
        "duplicate metadata key");
  check(gguf(0, 1, Bytes().str("general.alignment").put<int32_t>(4).put<uint32_t>(3)), "not a power of two");
  check(gguf(0, 1, Bytes().str("general.alignment").put<int32_t>(5).put<int32_t>(32)), "must be UINT32");
  auto tensor = [](const std::string& name, std::vector<int64_t> ne, int32_t type, uint64_t off) {
    Bytes b;
    b.str(name).put<uint32_t>(static_cast<uint32_t>(ne.size()));
    for (auto n : ne) b.put<int64_t>(n);
    return b.put<int32_t>(type).put<uint64_t>(off);
  };
  auto with_data = [](Bytes b, size_t n) { while (b.b.size() % 32) b.b.push_back('\0'); b.b.append(n, '\0'); return b; };
  check(with_data(gguf(1, 0, tensor("t", {4}, 0, 0)), 8), "runs past the end");
  check(with_data(gguf(1, 0, tensor("t", {4}, 77, 0)), 16), "unknown or removed GGML type id 77");
  check(with_data(gguf(1, 0, tensor("t", {4}, 4, 0)), 16), "unknown or removed");  // Q4_2: removed
  check(with_data(gguf(1, 0, tensor("t", {1LL << 40, 1LL << 40}, 0, 0)), 16), "overflow");
  check(with_data(gguf(1, 0, tensor("t", {-1}, 0, 0)), 16), "negative");
  check(with_data(gguf(1, 0, tensor("t", {33}, 8, 0)), 64), "not a multiple of the block size 32");
  check(with_data(gguf(1, 0, tensor("t", {4}, 0, 8)), 64), "not a multiple of the alignment");
  check(with_data(gguf(1, 0, tensor("t", {4, 1, 1, 1, 1}, 0, 0)), 64), "dimensions");
  check(with_data(gguf(1, 0, tensor(std::string(64, 'x'), {4}, 0, 0)), 64), "longer than 63 bytes");
  {
    Bytes two = tensor("t", {8}, 0, 0);
    two.raw(tensor("t", {8}, 0, 32).b);
    check(with_data(gguf(2, 0, two), 64), "duplicate tensor");
  }
  {
    Bytes two = tensor("a", {8}, 0, 0);
    two.raw(tensor("b", {8}, 0, 64).b);
    check(with_data(gguf(2, 0, two), 128), "packed in table order");
  }
}

TEST(BadGguf, TruncatedRealFile) {
  test::ScratchDir d;
  const auto src = read_text_file(test::fixture("gguf/tiny-e-f32.gguf"));
  Bytes{src.substr(0, src.size() / 2)}.save(d.str("t.gguf"));
  EXPECT_ERROR_HAS(read_gguf(d.str("t.gguf")), "truncated");
  Bytes{src.substr(0, 3000)}.save(d.str("h.gguf"));
  EXPECT_ERROR_HAS(read_gguf(d.str("h.gguf")), "truncated");
}

TEST(BadGguf, EveryTruncationPointOfTheHeaderIsClean) {
  // Cutting the file anywhere inside its metadata must give an error, not a crash.
  test::ScratchDir d;
  const auto src = read_text_file(test::fixture("gguf/tiny-dense-f32.gguf"));
  for (size_t cut = 0; cut < 6000; cut += 37) {
    Bytes{src.substr(0, cut)}.save(d.str("c.gguf"));
    EXPECT_NE(error_of([&] { read_gguf(d.str("c.gguf")); }), "<no error>") << "cut at " << cut;
  }
}

// ---------- the binary ----------

struct RunResult { int code; std::string err; };
RunResult run_g4(const std::string& args, const std::string& scratch) {
  const std::string errf = scratch + "/stderr.txt";
  const std::string cmd = std::string(G4_BINARY) + " " + args + " > /dev/null 2> " + errf;
  const int rc = std::system(cmd.c_str());
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, read_text_file(errf)};
}

TEST(BadInputCli, CleanOneLineErrorsAndExitCodes) {
  test::ScratchDir d;
  Bytes().raw("GGUF").put<uint32_t>(3).save(d.str("short.gguf"));
  auto r = run_g4("inspect -m " + d.str("short.gguf"), d.str());
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("truncated"), std::string::npos) << r.err;

  test::write_variant(test::fixture("tiny-e"), d.str(), [](auto& ts) {
    std::erase_if(ts, [](const SafetensorsOut& t) { return t.name.find("per_layer") != std::string::npos; });
  });
  r = run_g4("inspect -m " + d.str(), d.str());
  EXPECT_EQ(r.code, 1);  // validation errors are listed on stdout; exit code says invalid
  r = run_g4("logits -m " + d.str() + " --tokens 2,3 -o " + d.str("o.safetensors"), d.str());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("per-layer embeddings"), std::string::npos) << r.err;
  r = run_g4("logits -m " + test::fixture("tiny-e") + " --tokens 2,x -o " + d.str("o.safetensors"), d.str());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("'x' is not a non-negative token id"), std::string::npos) << r.err;
  r = run_g4("logits -m " + test::fixture("tiny-e") + " --tokens 2,99999 -o " + d.str("o.safetensors"), d.str());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("outside the vocabulary"), std::string::npos) << r.err;
  // Usage errors (unknown flag, missing required option, bad choice) exit with 2.
  for (const char* usage : {"run --no-such-flag", "perplexity -f x.txt", "logits -m x --precision f16 -o y", "nosuchcommand"}) {
    r = run_g4(usage, d.str());
    EXPECT_EQ(r.code, 2) << usage << ": " << r.err;
  }
  r = run_g4("--version", d.str());
  EXPECT_EQ(r.code, 0);
}

TEST(InspectCli, JsonOnAllFixtures) {
  test::ScratchDir d;
  for (const std::string m : {test::model_dir("brown-mini"), test::fixture("tiny-e"), test::fixture("tiny-dense"),
                              test::fixture("tiny-moe"), test::fixture("gguf/tiny-moe-f32.gguf")}) {
    const std::string out = d.str("inspect.json");
    const int rc = std::system((std::string(G4_BINARY) + " inspect --json -m " + m + " > " + out).c_str());
    EXPECT_EQ(rc, 0) << m;
    json j = json::parse(read_text_file(out));
    for (const char* k : {"architecture", "n_layers", "hidden_size", "vocab_size", "n_params", "layers", "tensors", "errors"})
      EXPECT_TRUE(j.contains(k)) << m << " lacks " << k;
    EXPECT_EQ(j["layers"].size(), j["n_layers"].get<size_t>());
    EXPECT_TRUE(j["errors"].empty());
    for (const auto& l : j["layers"])
      for (const char* k : {"type", "head_dim", "n_kv_heads", "kv_source"}) EXPECT_TRUE(l.contains(k));
  }
}

}  // namespace
}  // namespace g4

namespace g4 {
namespace {
// Found by fuzz_gguf: a tensor row whose byte count overflowed int64 (UBSan).
TEST(FuzzRegressions, GgufRowBytesOverflow) {
  EXPECT_NE(error_of([] { read_gguf(test::fixture("fuzz-gguf-rowbytes-overflow.bin")); }), "<no error>");
}
}  // namespace
}  // namespace g4
