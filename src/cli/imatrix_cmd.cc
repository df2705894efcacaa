#include <fmt/format.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/forward_flags.h"
#include "tools/imatrix.h"
#include "util/error.h"
#include "util/mapped_file.h"
#include "util/progress.h"

namespace g4::cli {

void register_imatrix(CLI::App& app) {
  struct Opts {
    std::string model, file, out, format = "gguf";
    ForwardFlags fwd;
    int n_ctx = 512, chunks = -1, threads = 0;
    bool lenient = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("imatrix", "Importance matrix for the quantizer (llama-imatrix's GGUF format)");
  cmd->add_option("-m,--model", o->model, "HF checkpoint directory or .gguf file")->required();
  cmd->add_option("-f,--file", o->file, "calibration text")->required();
  cmd->add_option("-o,--output", o->out, "output file (default imatrix.gguf)")->default_val("imatrix.gguf");
  cmd->add_option("-c,--ctx-size", o->n_ctx, "tokens per chunk (default 512)");
  cmd->add_option("--chunks", o->chunks, "use at most this many chunks");
  cmd->add_option("--output-format", o->format, "gguf (default) or dat (llama.cpp's legacy format)")
      ->check(CLI::IsMember({"gguf", "dat"}));
  cmd->add_option("-t,--threads", o->threads, "threads (default: all cores)");
  add_forward_flags(cmd, o->fwd, "fast");
  cmd->add_flag("--lenient", o->lenient, "load despite tensors that contradict the config");
  cmd->final_callback([o] {
    set_threads(o->threads);
    Model m = load_model(o->model, LoadOptions{o->lenient});
    ImatrixOptions io;
    io.n_ctx = o->n_ctx;
    io.max_chunks = o->chunks;
    io.forward = o->fwd.options();
    io.dataset = o->file;
    // llama-imatrix's running PPL values, [1]4.68,[2]5.01,... (in one bar on a terminal).
    std::unique_ptr<Progress> bar;
    std::string running;
    io.on_chunk = [&](int c, int n, double ppl) {
      running += fmt::format("[{}]{:.4f},", c + 1, ppl);
      if (Progress::enabled()) {
        if (!bar) bar = std::make_unique<Progress>("imatrix", n);
        const size_t keep = running.size() > 60 ? running.find('[', running.size() - 60) : 0;
        bar->update(c + 1, "..." + running.substr(keep));
      } else {
        std::fprintf(stderr, "[%d]%.4f%s", c + 1, ppl, c + 1 == n ? "\n" : ",");
      }
    };
    const ImatrixData d = compute_imatrix(m, read_text_file(o->file), io);
    if (bar) {
      bar->finish();
      std::fprintf(stderr, "%s\n", running.substr(0, running.size() - 1).c_str());
    }
    if (o->format == "dat") write_imatrix_dat(o->out, d);
    else write_imatrix_gguf(o->out, d);
    std::printf("%zu entries from %d chunks of %d tokens (%s): %s\nFinal estimate: PPL = %.4f\n", d.entries.size(), d.chunks,
                d.chunk_size, o->fwd.precision.c_str(), o->out.c_str(), d.ppl);
  });
}

}  // namespace g4::cli
