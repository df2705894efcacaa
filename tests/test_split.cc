// Split GGUFs (NAME-00001-of-0000N.gguf): llama-gguf-split's files load as one; g4's quantizer
// writes them (--split-max-size) and they give the same logits as the single file; a missing
// part, a part of another split and opening a later part are errors naming the file.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "formats/gguf.h"
#include "runtime/session.h"
#include "test_util.h"
#include "tools/quantize.h"
#include "util/error.h"

namespace g4 {
namespace {

namespace fs = std::filesystem;

std::string error_of(const std::string& path) {
  try {
    read_gguf(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(SplitGguf, LlamaCppSplitLoadsAsTheWholeFile) {
  const GgufFile whole = read_gguf(test::fixture("iq/brown-mini-IQ4_NL.gguf"));
  const GgufFile split = read_gguf(test::fixture("iq/split/brown-mini-IQ4_NL-00001-of-00002.gguf"));
  ASSERT_EQ(split.parts.size(), 2u);
  ASSERT_EQ(split.tensors.size(), whole.tensors.size());
  for (size_t i = 0; i < whole.tensors.size(); ++i) {
    const auto &a = whole.tensors[i], &b = split.tensors[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.dtype, b.dtype);
    EXPECT_EQ(a.shape, b.shape);
    ASSERT_EQ(a.nbytes, b.nbytes);
    EXPECT_EQ(std::memcmp(a.data, b.data, static_cast<size_t>(a.nbytes)), 0) << a.name;
  }
  // Each tensor maps its own part.
  EXPECT_NE(split.tensors[0].file.get(), split.tensors[1].file.get());
  std::printf("llama-gguf-split: %zu parts, %zu tensors, byte-identical to the single file\n", split.parts.size(),
              split.tensors.size());
}

TEST(SplitGguf, QuantizeWritesPartsThatRunLikeTheSingleFile) {
  test::ScratchDir d;
  Model src = load_model(test::fixture("tiny-dense"));
  QuantizeOptions qo;
  qo.type = DType::Q8_0;
  ASSERT_TRUE(quantize_model(src, d.str("one.gguf"), qo).passed());
  qo.split_max_bytes = 100000;
  const auto rep = quantize_model(src, d.str("many.gguf"), qo);
  ASSERT_TRUE(rep.passed()) << rep.table();
  ASSERT_GE(rep.files.size(), 3u);
  const int n = static_cast<int>(rep.files.size());
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(rep.files[static_cast<size_t>(i)], gguf_split_path(d.str("many"), i + 1, n));
    EXPECT_LE(fs::file_size(rep.files[static_cast<size_t>(i)]), 100000u + 20000u);  // data cap + header
  }
  EXPECT_FALSE(fs::exists(d.str("many.gguf")));
  Model one = load_model(d.str("one.gguf")), many = load_model(rep.files.front());
  const std::vector<int32_t> ids = {2, 17, 9, 301, 44, 5};
  const auto a = Session(one, {Precision::F64}).eval(ids).logits;
  const auto b = Session(many, {Precision::F64}).eval(ids).logits;
  EXPECT_TRUE(a == b) << "the split file must compute exactly what the single file computes";
  std::printf("quantize --split-max-size 100000: %d parts, logits identical to the single file\n", n);

  // Errors: a later part opened first, a missing part, a part from another split.
  const std::string first = rep.files.front(), second = rep.files[1];
  const std::string later = error_of(second);
  EXPECT_NE(later.find("open the first part, " + first), std::string::npos) << later;
  qo.split_max_bytes = 60000;  // another split of the same model, with more parts
  const auto other = quantize_model(src, d.str("other.gguf"), qo);
  ASSERT_GT(other.files.size(), rep.files.size());
  fs::copy_file(other.files[1], second, fs::copy_options::overwrite_existing);
  const std::string mismatch = error_of(first);
  EXPECT_NE(mismatch.find(second), std::string::npos) << mismatch;
  EXPECT_NE(mismatch.find("different splits"), std::string::npos) << mismatch;
  fs::remove(second);
  const std::string missing = error_of(first);
  EXPECT_NE(missing.find("part 2 of this " + std::to_string(n) + "-part split GGUF is missing"), std::string::npos) << missing;
  EXPECT_NE(missing.find(second), std::string::npos) << missing;
  std::printf("errors:\n  %s\n  %s\n  %s\n", later.c_str(), mismatch.c_str(), missing.c_str());
}

}  // namespace
}  // namespace g4
