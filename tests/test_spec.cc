// Proof that every tensor class and every RoPE parameter is used: perturb one and the
// logits must move far past the 1e-11 tolerance. Also config parsing rules.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <cstring>

#include "model/config_hf.h"
#include "runtime/session.h"
#include "test_util.h"
#include "tools/metrics.h"
#include "util/error.h"
#include "util/half.h"
#include "util/mapped_file.h"

namespace g4 {
namespace {
namespace fs = std::filesystem;

using test::write_variant;

double logits_nmse_vs_gold(const std::string& dir, const std::string& variant) {
  Model m = load_model(dir);
  test::Gold gold(test::fixture(variant + "/gold.safetensors"));
  auto out = Session(m, {Precision::F64}).eval(gold.i32("input_ids"));
  return compare_arrays(out.logits, gold.f32("logits_f64"), m.spec.vocab).nmse;
}

// Non-uniform change (every other element x1.5) so that no following norm can undo it.
void perturb_bf16(SafetensorsOut& t) {
  const size_t n = t.bytes.size() / 2;
  for (size_t i = 0; i < n; ++i) {
    if (n > 1 && i % 2 == 0) continue;
    uint16_t h;
    std::memcpy(&h, &t.bytes[2 * i], 2);
    h = f32_to_bf16(bf16_to_f32(h) * 1.5f);
    std::memcpy(&t.bytes[2 * i], &h, 2);
  }
}

struct PerturbCase { std::string variant, suffix; };

class PerturbTensor : public ::testing::TestWithParam<PerturbCase> {};

TEST_P(PerturbTensor, LogitsMovePastTolerance) {
  const auto& c = GetParam();
  test::ScratchDir dir;
  bool found = false;
  write_variant(test::fixture(c.variant), dir.str(), [&](std::vector<SafetensorsOut>& ts) {
    for (auto& t : ts)
      if (!found && t.name.size() >= c.suffix.size() && t.name.compare(t.name.size() - c.suffix.size(), c.suffix.size(), c.suffix) == 0) {
        perturb_bf16(t);
        found = true;
      }
  });
  ASSERT_TRUE(found) << c.suffix;
  const double nmse = logits_nmse_vs_gold(dir.str(), c.variant);
  std::printf("[%s] perturbed %-40s NMSE vs gold %.3e\n", c.variant.c_str(), c.suffix.c_str(), nmse);
  EXPECT_GT(nmse, 1e-8);
}

std::vector<PerturbCase> perturb_cases() {
  std::vector<PerturbCase> v;
  for (const char* s : {"embed_tokens.weight", "norm.weight", "embed_tokens_per_layer.weight",
                        "per_layer_model_projection.weight", "per_layer_projection_norm.weight",
                        "layers.0.input_layernorm.weight", "layers.0.self_attn.q_proj.weight",
                        "layers.0.self_attn.k_proj.weight", "layers.0.self_attn.v_proj.weight",
                        "layers.0.self_attn.o_proj.weight", "layers.0.self_attn.q_norm.weight",
                        "layers.0.self_attn.k_norm.weight", "layers.0.post_attention_layernorm.weight",
                        "layers.0.pre_feedforward_layernorm.weight", "layers.0.mlp.gate_proj.weight",
                        "layers.0.mlp.up_proj.weight", "layers.0.mlp.down_proj.weight",
                        "layers.0.post_feedforward_layernorm.weight", "layers.0.layer_scalar",
                        "layers.0.per_layer_input_gate.weight", "layers.0.per_layer_projection.weight",
                        "layers.0.post_per_layer_input_norm.weight", "layers.3.self_attn.q_proj.weight",
                        "layers.7.self_attn.q_proj.weight", "layers.7.mlp.down_proj.weight"})
    v.push_back({"tiny-e", s});
  for (const char* s : {"layers.5.self_attn.k_proj.weight", "layers.5.self_attn.k_norm.weight"})
    v.push_back({"tiny-dense", s});  // k_eq_v: K projection is also V
  for (const char* s : {"layers.0.router.proj.weight", "layers.0.router.scale", "layers.0.router.per_expert_scale",
                        "layers.0.experts.gate_up_proj", "layers.0.experts.down_proj",
                        "layers.0.pre_feedforward_layernorm_2.weight", "layers.0.post_feedforward_layernorm_1.weight",
                        "layers.0.post_feedforward_layernorm_2.weight"})
    v.push_back({"tiny-moe", s});
  return v;
}

INSTANTIATE_TEST_SUITE_P(EveryClass, PerturbTensor, ::testing::ValuesIn(perturb_cases()),
                         [](const auto& info) {
                           std::string n = info.param.variant + "_" + info.param.suffix;
                           for (auto& ch : n) if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

struct RopeCase { const char* name; std::function<void(json&)> edit; };

TEST(PerturbConfig, RopeParametersAreUsed) {
  const RopeCase cases[] = {
      {"sliding rope_theta", [](json& c) { c["text_config"]["rope_parameters"]["sliding_attention"]["rope_theta"] = 20000.0; }},
      {"full rope_theta", [](json& c) { c["text_config"]["rope_parameters"]["full_attention"]["rope_theta"] = 10000.0; }},
      {"partial_rotary_factor", [](json& c) { c["text_config"]["rope_parameters"]["full_attention"]["partial_rotary_factor"] = 0.5; }},
      {"final_logit_softcapping", [](json& c) { c["text_config"]["final_logit_softcapping"] = 5.0; }},
      {"sliding_window", [](json& c) { c["text_config"]["sliding_window"] = 4; }},
  };
  for (const auto& rc : cases) {
    test::ScratchDir dir;
    write_variant(test::fixture("tiny-e"), dir.str(), nullptr, rc.edit);
    const double nmse = logits_nmse_vs_gold(dir.str(), "tiny-e");
    std::printf("[tiny-e] changed %-24s NMSE vs gold %.3e\n", rc.name, nmse);
    EXPECT_GT(nmse, 1e-8) << rc.name;
  }
}

TEST(HfConfig, PerLayerConfigAndFlatFormAgree) {
  json cfg = json::parse(read_text_file(test::fixture("tiny-dense/config.json")));
  ModelSpec with_plc = spec_from_hf_config(cfg, "with per_layer_config");
  cfg["text_config"].erase("per_layer_config");
  ModelSpec flat = spec_from_hf_config(cfg, "flat");
  cfg["text_config"].erase("global_head_dim");
  cfg["text_config"].erase("num_global_key_value_heads");
  cfg["text_config"]["per_layer_config"] = {{"5", {{"head_dim", 32}, {"num_key_value_heads", 1}}}};
  ModelSpec plc_only = spec_from_hf_config(cfg, "per_layer_config only");
  for (const ModelSpec* s : {&with_plc, &flat, &plc_only}) {
    EXPECT_EQ(s->layers[5].head_dim, 32);
    EXPECT_EQ(s->layers[5].n_kv_heads, 1);
    EXPECT_FALSE(s->layers[5].has_v_proj);
    EXPECT_EQ(s->layers[0].head_dim, 16);
    EXPECT_EQ(s->layers[0].n_kv_heads, 2);
  }
}

TEST(HfConfig, TextConfigAtRootAndDefaults) {
  json cfg = json::parse(read_text_file(test::fixture("tiny-dense/config.json")))["text_config"];
  cfg.erase("layer_types");  // HF rule: layer i is full iff (i+1) % 6 == 0, the last forced full
  ModelSpec s = spec_from_hf_config(cfg, "root");
  EXPECT_EQ(s.layers[5].type, AttnType::Full);
  EXPECT_EQ(s.layers[4].type, AttnType::Sliding);
  cfg["num_hidden_layers"] = 4;  // last layer forced to full
  cfg.erase("per_layer_config");
  EXPECT_EQ(spec_from_hf_config(cfg, "root").layers[3].type, AttnType::Full);
}

TEST(HfConfig, KvSharedLayerWithoutSourceIsAnError) {
  json cfg = json::parse(read_text_file(test::fixture("tiny-e/config.json")));
  cfg["text_config"].erase("layer_types");  // layers 0-4 sliding, 5 and 7 full and shared
  cfg["text_config"].erase("per_layer_config");
  try {
    spec_from_hf_config(cfg, "cfg");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no earlier non-shared layer"), std::string::npos) << e.what();
  }
}

TEST(HfConfig, KvSharingFollowsHfRule) {
  ModelSpec s = spec_from_hf_config_file(test::fixture("tiny-e/config.json"));
  // layers 5,6 (sliding) read 4? no: the last non-shared sliding layer is 4; layer 7 (full) reads 3.
  EXPECT_FALSE(s.layers[5].owns_kv);
  EXPECT_EQ(s.layers[5].kv_source, 4);
  EXPECT_EQ(s.layers[6].kv_source, 4);
  EXPECT_EQ(s.layers[7].kv_source, 3);
  EXPECT_EQ(s.layers[5].ff_width, 256);  // double-wide on shared layers
  EXPECT_EQ(s.layers[4].ff_width, 128);
  EXPECT_EQ(s.layers[3].rope_pairs, 4);  // int(0.25 * 32 // 2)
  EXPECT_EQ(s.layers[0].rope_pairs, 8);
}

}  // namespace
}  // namespace g4
