#include "util/json.h"

#include <set>
#include <vector>

#include "util/error.h"

namespace g4 {

json parse_json_strict(std::string_view text, const std::string& what) {
  constexpr int kMaxDepth = 256;
  std::vector<std::set<std::string>> keys_per_object;
  auto cb = [&](int depth, json::parse_event_t ev, json& parsed) {
    if (depth > kMaxDepth) fail("{}: JSON nested deeper than {} levels", what, kMaxDepth);
    switch (ev) {
      case json::parse_event_t::object_start: keys_per_object.emplace_back(); break;
      case json::parse_event_t::object_end:
        if (!keys_per_object.empty()) keys_per_object.pop_back();
        break;
      case json::parse_event_t::key: {
        const auto& k = parsed.get_ref<const std::string&>();
        if (!keys_per_object.empty() && !keys_per_object.back().insert(k).second)
          fail("{}: duplicate JSON key \"{}\"", what, k);
        break;
      }
      default: break;
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), cb);
  } catch (const json::exception& e) {
    fail("{}: invalid JSON: {}", what, e.what());
  }
}

}  // namespace g4
