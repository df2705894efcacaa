#include <fmt/format.h>

#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "cli/common_flags.h"
#include "tools/compare.h"
#include "tools/forensics.h"
#include "tools/grade.h"
#include "tools/token_input.h"
#include "util/error.h"
#include "util/mapped_file.h"

namespace g4::cli {
namespace {

// Tokens for compare/restore: --tokens, --tokens-file, or the first n_ctx of -f TEXT.
std::vector<int32_t> tokens_for(const Model& m, const std::string& csv, const std::string& file, const std::string& text_file,
                                int n) {
  if (!csv.empty() || !file.empty()) return resolve_token_input(m, csv, file, "");
  if (text_file.empty()) fail("give the text with -f FILE (or --tokens / --tokens-file)");
  std::string text = read_text_file(text_file);
  if (!text.empty() && text.back() == '\n') text.pop_back();
  auto ids = load_tokenizer(m).encode(text, true, false);
  if (n > 0 && static_cast<int>(ids.size()) > n) ids.resize(static_cast<size_t>(n));
  return ids;
}

}  // namespace

void register_compare(CLI::App& app) {
  struct Opts {
    std::vector<std::string> models;
    std::string file, tokens, tokens_file, precision_b;
    CommonFlags c;
    int kld_bucket = 64;
    bool json = false, lenient = false, no_explain = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("compare", "Same tokens through two models: logits NMSE, KLD, top-1, per-layer hidden states");
  // -m is given twice here (A, the reference, then B): declared by the command, not the shared set.
  cmd->add_option("-m,--model", o->models, "the two models: -m A (the reference) -m B")->required()->expected(2)->check(CLI::ExistingPath);
  add_common_flags(cmd, o->c, kThreads | kEvalCtx | kPrecisionDevice, kReferencePrecision);
  add_text_file(cmd, o->file, "text; its first -c tokens are used");
  cmd->add_option("--tokens", o->tokens, "comma-separated token ids");
  cmd->add_option("--tokens-file", o->tokens_file, "JSON array of token ids")->check(CLI::ExistingFile);
  cmd->add_option("--precision-b", o->precision_b, "precision of B (default: --precision)")->check(CLI::IsMember(kPrecisionNames));
  cmd->add_flag("--no-explain", o->no_explain,
                "skip the forensics of B against A (the error B's quant types explain, per layer)");
  cmd->add_option("--kld-bucket", o->kld_bucket, "KLD and top-1 per this many positions (default 64)");
  cmd->add_flag("--json", o->json, "machine-readable output");
  cmd->add_flag("--lenient", o->lenient, "load despite tensors that contradict the config");
  cmd->final_callback([o] {
    if (o->file.empty() && o->tokens.empty() && o->tokens_file.empty())
      throw CLI::ValidationError("-f", "give the text with -f FILE (or --tokens / --tokens-file)");
    Model a = load_model(o->models[0], LoadOptions{o->lenient});
    Model b = load_model(o->models[1], LoadOptions{o->lenient});
    const auto toks = tokens_for(a, o->tokens, o->tokens_file, o->file, static_cast<int>(o->c.ctx));
    // --device runs both models there (an f64 default precision becomes f32 on a GPU).
    const Precision pa = apply_device_flags(o->c.fwd.dev, parse_precision(o->c.fwd.precision), o->c.fwd.precision_opt);
    const Precision pb = o->precision_b.empty() ? pa : parse_precision(o->precision_b);
    const ForwardOptions fa{pa};
    const ForwardOptions fb{pb};
    auto r = compare_models(a, b, toks, fa, fb, o->kld_bucket);
    // B judged against what its quant types explain: the forensics of B against A, when B
    // is an artifact of A's checkpoint (same architecture and tensors).
    if (!o->no_explain && !r.hidden.empty()) {
      try {
        explain_compare(r, run_forensics(b, a));
      } catch (const Error& e) {
        fmt::print(stderr, "compare: no forensics of B against A ({}), so no expected error per layer\n", e.what());
      }
    }
    if (o->json) std::printf("%s\n", compare_json(r).dump(2).c_str());
    else std::fputs(format_compare(r, o->models[0], o->models[1]).c_str(), stdout);
  });
}

void register_forensics(CLI::App& app) {
  struct Opts {
    std::string ref, png, restore, file;
    CommonFlags c;
    int chunks = 8;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("forensics", "Weight forensics of an artifact against its reference checkpoint");
  add_common_flags(cmd, o->c, kModel | kThreads | kEvalCtx);
  cmd->add_option("--ref", o->ref, "the reference checkpoint")->required()->check(CLI::ExistingPath);
  cmd->add_option("--png", o->png, "write heatmap.png (layer x class) into this directory");
  cmd->add_option("--restore", o->restore, "CLASS, metadata or auto: PPL of hybrids with reference tensors (or hyperparameters) put back")->expected(0, 1)->default_str("auto");
  add_text_file(cmd, o->file, "text for --restore (its -c and --chunks)");
  cmd->add_option("--chunks", o->chunks, "chunks for --restore (default 8)");
  cmd->add_flag("--json", o->json, "machine-readable output");
  cmd->final_callback([o, cmd] {
    if (cmd->count("--restore") && o->file.empty()) throw CLI::ValidationError("--restore", "needs the text: -f FILE");
    Model art = open_model(o->c.model, LoadOptions{true});
    Model ref = load_model(o->ref);
    const auto r = run_forensics(art, ref);
    if (!o->png.empty()) {
      std::filesystem::create_directories(o->png);
      write_heatmap_png(r, (std::filesystem::path(o->png) / "heatmap.png").string());
    }
    json j;
    if (o->json) j = forensics_json(r);
    else std::fputs(format_forensics(r).c_str(), stdout);
    if (cmd->count("--restore")) {
      const std::string which = o->restore.empty() ? "auto" : o->restore;
      PerplexityOptions po;
      po.n_ctx = static_cast<int>(o->c.ctx);
      po.max_chunks = o->chunks;
      po.forward.precision = Precision::F32;
      std::string text = read_text_file(o->file);
      if (!text.empty() && text.back() == '\n') text.pop_back();
      const auto rr = run_restore(art, ref, which, load_tokenizer(ref).encode(text, true, false), po, &r);
      if (o->json) {
        json a = json::array();
        for (const auto& x : rr.rows) a.push_back({{"restored", x.what}, {"ppl", x.ppl}, {"gap_closed", x.gap_closed}});
        j["restore"] = {{"n_ctx", rr.n_ctx}, {"chunks", rr.chunks}, {"gap", rr.gap}, {"gap_err", rr.gap_err}, {"noise", rr.noise()}, {"rows", a}};
      } else {
        std::printf("\n%s", format_restore(rr).c_str());
      }
    }
    if (o->json) std::printf("%s\n", j.dump(2).c_str());
    if (!r.clean()) std::exit(1);  // findings, like inspect on an invalid model
  });
}

void register_grade(CLI::App& app) {
  auto o = std::make_shared<GradeOptions>();
  auto c = std::make_shared<CommonFlags>();
  auto ref = std::make_shared<std::string>(), file = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("grade", "Grade card: PPL, KLD, forensics, restore ranking and a verdict");
  add_common_flags(cmd, *c, kModel | kThreads | kEvalCtx);
  cmd->add_option("--ref", *ref, "the reference checkpoint")->required()->check(CLI::ExistingPath);
  add_text_file(cmd, *file, "evaluation text")->required();
  cmd->add_option("--chunks", o->chunks, "chunks for PPL/KLD (default 16)");
  cmd->add_option("-o,--out", o->html_out, "HTML report (plots, provenance); a PNG summary and the markdown card are written beside it");
  cmd->add_option("--restore-ctx", o->restore_ctx, "context for the restore ranking (default: -c)");
  cmd->add_option("--restore-chunks", o->restore_chunks, "chunks for the restore ranking (default: --chunks)");
  cmd->final_callback([o, c, ref, file] {
    o->n_ctx = static_cast<int>(c->ctx);
    o->text = read_text_file(*file);
    Model a = open_model(c->model, LoadOptions{true});
    Model r = load_model(*ref);
    o->text_name = *file;
    o->build = version_string();
    const auto g = grade(a, r, *o);
    std::fputs(g.markdown.c_str(), stdout);
    if (!o->html_out.empty()) std::fprintf(stderr, "wrote %s (with .png and .md beside it)\n", o->html_out.c_str());
    if (!g.pass) std::exit(1);  // a failing verdict, like inspect on an invalid model
  });
}

}  // namespace g4::cli
