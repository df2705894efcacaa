#include "util/json.h"

#include <vector>

#include "util/error.h"

namespace g4 {
namespace {

// A SAX handler that builds the DOM itself. nlohmann's callback parser costs O(n)
// per member of a large object (111 s for 90,000 members); here each member costs one
// map lookup, which is also the duplicate-key check, so parsing stays O(n log n).
class StrictBuilder {
 public:
  StrictBuilder(json& root, const std::string& what) : root_(root), what_(what) {}
  static constexpr size_t kMaxDepth = 256;

  bool null() { return put(json(nullptr)); }
  bool boolean(bool v) { return put(json(v)); }
  bool number_integer(json::number_integer_t v) { return put(json(v)); }
  bool number_unsigned(json::number_unsigned_t v) { return put(json(v)); }
  bool number_float(json::number_float_t v, const std::string&) { return put(json(v)); }
  bool string(std::string& v) { return put(json(std::move(v))); }
  bool binary(json::binary_t& v) { return put(json(std::move(v))); }
  bool start_object(std::size_t) { return open(json::object()); }
  bool start_array(std::size_t) { return open(json::array()); }
  bool end_object() { stack_.pop_back(); return true; }
  bool end_array() { stack_.pop_back(); return true; }
  bool key(std::string& k) {
    auto& obj = *stack_.back()->get_ptr<json::object_t*>();
    auto [it, fresh] = obj.try_emplace(std::move(k), nullptr);
    if (!fresh) fail("{}: duplicate JSON key \"{}\"", what_, it->first);
    slot_ = &it->second;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) {
    fail("{}: invalid JSON: {}", what_, e.what());
  }

 private:
  json* place(json&& v) {
    if (stack_.empty()) { root_ = std::move(v); return &root_; }
    json& top = *stack_.back();
    if (top.is_array()) {
      auto& arr = *top.get_ptr<json::array_t*>();
      arr.push_back(std::move(v));
      return &arr.back();
    }
    *slot_ = std::move(v);
    return slot_;
  }
  bool put(json&& v) { place(std::move(v)); return true; }
  bool open(json&& v) {
    if (stack_.size() >= kMaxDepth) fail("{}: JSON nested deeper than {} levels", what_, kMaxDepth);
    // Pointers into parents stay valid: a container is only appended to while it is the
    // top of the stack, and std::map nodes never move.
    stack_.push_back(place(std::move(v)));
    return true;
  }

  json& root_;
  const std::string& what_;
  std::vector<json*> stack_;
  json* slot_ = nullptr;  // the member a value goes into, after its key
};

}  // namespace

json parse_json_strict(std::string_view text, const std::string& what) {
  json root;
  StrictBuilder b(root, what);
  try {
    json::sax_parse(text.begin(), text.end(), &b);
  } catch (const json::exception& e) {
    fail("{}: invalid JSON: {}", what, e.what());
  }
  return root;
}

}  // namespace g4
