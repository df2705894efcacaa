#include <fmt/format.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/common_flags.h"
#include "tools/quantize.h"
#include "util/error.h"
#include "util/progress.h"

namespace g4::cli {
namespace {

// "2000", "500K", "100M", "2G" (powers of 1000, as llama-gguf-split reads them) -> bytes.
uint64_t parse_byte_size(const std::string& s, const char* flag) {
  size_t used = 0;
  unsigned long long v = 0;
  try {
    v = std::stoull(s, &used);
  } catch (const std::exception&) {
    fail("{} '{}': expected a size such as 500M or 2G", flag, s);
  }
  const std::string unit = s.substr(used);
  uint64_t mul = 1;
  if (unit == "K" || unit == "k") mul = 1000;
  else if (unit == "M" || unit == "m") mul = 1000 * 1000;
  else if (unit == "G" || unit == "g") mul = 1000ull * 1000 * 1000;
  else if (!unit.empty()) fail("{} '{}': unknown unit '{}' (use K, M or G)", flag, s, unit);
  if (v == 0 || v > UINT64_MAX / mul) fail("{} '{}': must be between 1 byte and 2^64", flag, s);
  return v * mul;
}

}  // namespace

void register_quantize(CLI::App& app) {
  struct Opts {
    CommonFlags c;
    std::string out, type, recipe, split_max_size, imatrix;
    std::vector<std::string> overrides;
    bool no_verify = false, lenient = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("quantize", "Write a GGUF (F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/Q4_K/Q5_K/Q6_K/IQ4_NL/IQ4_XS) and verify it tensor by tensor");
  add_common_flags(cmd, o->c, kModel | kThreads);
  cmd->add_option("-o,--out", o->out, "output .gguf")->required();
  auto* t = cmd->add_option("--type", o->type, "one type for every quantizable tensor");
  auto* r = cmd->add_option("--recipe", o->recipe, "q8_0, q4_0, q4_k_m (llama.cpp's mix) or mixed-8-4");
  t->excludes(r);
  cmd->add_option("--tensor-type", o->overrides, "REGEX=TYPE for tensors whose GGUF name matches (repeatable)");
  cmd->add_flag("--no-verify", o->no_verify, "skip the verify gate");
  cmd->add_option("--imatrix", o->imatrix,
                  "importance matrix (llama-imatrix's GGUF or legacy .dat), used for the types that take one (IQ4_NL, IQ4_XS)");
  cmd->add_option("--split-max-size", o->split_max_size,
                  "write a split GGUF, OUT-00001-of-0000N.gguf ..., parts of at most this much tensor data (N, NK, NM or NG)");
  cmd->add_flag("--lenient", o->lenient, "load the source despite tensors that contradict its config");
  cmd->final_callback([o] {
    Model src = load_model(o->c.model, LoadOptions{o->lenient});
    QuantizeOptions qo;
    if (!o->type.empty()) qo.type = parse_dtype(o->type);
    qo.recipe = o->recipe;
    for (const auto& s : o->overrides) qo.overrides.push_back(parse_override(s));
    qo.verify = !o->no_verify;
    Imatrix im;
    if (!o->imatrix.empty()) {
      im = read_imatrix(o->imatrix);
      qo.imatrix = &im;
    }
    if (!o->split_max_size.empty()) qo.split_max_bytes = parse_byte_size(o->split_max_size, "--split-max-size");
    qo.on_tensor = Progress::callback("quantize");
    VerifyReport rep = quantize_model(src, o->out, qo);
    if (qo.verify) {
      std::fputs(rep.table().c_str(), stdout);
      if (!rep.passed()) fail("verify gate failed: {} was not written (see the table above)", o->out);
    }
    for (const auto& f : rep.files) std::printf("wrote %s%s\n", f.c_str(), qo.verify ? "" : " (not verified)");
  });
}

}  // namespace g4::cli
