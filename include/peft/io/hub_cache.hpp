// Where a hub id (`Qwen/Qwen2.5-7B-Instruct`, `AI-ModelScope/alpaca-gpt4-data-zh`) already lies on
// this machine, looked up as ms-swift and Hugging Face users have their caches, never downloaded:
//   1. ModelScope: $MODELSCOPE_CACHE (default ~/.cache/modelscope/hub), models under
//      models/<org>/<name> or, as older modelscope wrote them, <org>/<name>; datasets under
//      datasets/<org>/<name>. Newer modelscope writes a '.' of the name as "___"
//      (Qwen2___5-7B-Instruct), so both spellings are tried.
//   2. Hugging Face: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub, with
//      models--<org>--<name>/snapshots/<rev> (datasets--...), rev named by refs/main, else the
//      only snapshot there.
//   3. $PEFT_DATA_HOME/<org>/<name>.
// The first folder that `accept`s wins; every path tried is returned, so a miss can list them.
// Models and datasets share this one lookup (model folders, --dataset ids, chat and merge_lora).
#pragma once
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "peft/core/error.hpp"

namespace peft::io {

enum class HubKind { Model, Dataset };

struct HubLookup {
  std::optional<std::filesystem::path> found;
  std::vector<std::filesystem::path> tried;

  std::string tried_list() const {
    std::string out;
    for (const auto& p : tried) out += "\n  " + p.string();
    return out;
  }
};

using EnvLookup = std::function<const char*(const char*)>;

namespace detail {

inline std::filesystem::path env_path(const EnvLookup& env, const char* name) {
  const char* v = env(name);
  return v && *v ? std::filesystem::path(v) : std::filesystem::path();
}

inline std::filesystem::path home_cache(const EnvLookup& env) {
  if (auto xdg = env_path(env, "XDG_CACHE_HOME"); !xdg.empty()) return xdg;
  const auto home = env_path(env, "HOME");
  return home.empty() ? std::filesystem::path() : home / ".cache";
}

// The revision folder of an HF cache repo folder: refs/main's, else the only snapshot.
inline std::optional<std::filesystem::path> hf_snapshot(const std::filesystem::path& repo) {
  std::error_code ec;
  const auto snapshots = repo / "snapshots";
  if (!std::filesystem::is_directory(snapshots, ec)) return std::nullopt;
  std::ifstream ref(repo / "refs" / "main");
  std::string rev;
  if (ref && std::getline(ref, rev)) {
    while (!rev.empty() && (rev.back() == '\r' || rev.back() == ' ')) rev.pop_back();
    if (!rev.empty()) return snapshots / rev;
  }
  std::optional<std::filesystem::path> only;
  for (const auto& e : std::filesystem::directory_iterator(snapshots, ec)) {
    if (!e.is_directory(ec)) continue;
    if (only) return std::nullopt;  // several revisions and no refs/main: none is "the" one
    only = e.path();
  }
  return only;
}

}  // namespace detail

// `org/name`: the shape of a hub id (letters, digits, '-', '_', '.'; one '/').
inline bool looks_like_hub_id(std::string_view s) {
  const std::size_t slash = s.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 == s.size()) return false;
  if (s.find('/', slash + 1) != std::string_view::npos || s.front() == '.') return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
          c == '.' || c == '/'))
      return false;
  return true;
}

inline HubLookup find_in_hub_caches(std::string_view id, HubKind kind,
                                    const std::function<bool(const std::filesystem::path&)>& accept,
                                    const EnvLookup& env = [](const char* n) -> const char* { return std::getenv(n); }) {
  namespace fs = std::filesystem;
  HubLookup r;
  const std::string org(id.substr(0, id.find('/'))), name(id.substr(id.find('/') + 1));
  std::string ms_name = name;  // newer modelscope's spelling of '.'
  for (std::size_t i = 0; (i = ms_name.find('.', i)) != std::string::npos; i += 3) ms_name.replace(i, 1, "___");
  auto consider = [&](const fs::path& p) {
    if (r.found) return;
    r.tried.push_back(p);
    std::error_code ec;
    if (fs::is_directory(p, ec) && accept(p)) r.found = p;
  };
  auto both_spellings = [&](const fs::path& parent) {
    consider(parent / org / name);
    if (ms_name != name) consider(parent / org / ms_name);
  };

  const fs::path cache = detail::home_cache(env);
  fs::path ms = detail::env_path(env, "MODELSCOPE_CACHE");
  if (ms.empty() && !cache.empty()) ms = cache / "modelscope" / "hub";
  if (!ms.empty()) {
    if (kind == HubKind::Model) {
      both_spellings(ms / "models");
      both_spellings(ms);
    } else {
      both_spellings(ms / "datasets");
    }
  }

  fs::path hf = detail::env_path(env, "HF_HUB_CACHE");
  if (hf.empty()) hf = detail::env_path(env, "HUGGINGFACE_HUB_CACHE");
  if (hf.empty())
    if (auto home = detail::env_path(env, "HF_HOME"); !home.empty()) hf = home / "hub";
  if (hf.empty() && !cache.empty()) hf = cache / "huggingface" / "hub";
  if (!hf.empty() && !r.found) {
    const fs::path repo = hf / ((kind == HubKind::Model ? "models--" : "datasets--") + org + "--" + name);
    if (const auto snap = detail::hf_snapshot(repo)) consider(*snap);
    else r.tried.push_back(repo / "snapshots" / "<refs/main>");
  }

  if (const auto home = detail::env_path(env, "PEFT_DATA_HOME"); !home.empty()) consider(home / org / name);
  return r;
}

// --model: an existing folder as given, else a hub id found in the caches; absolute either way,
// so what a run records (args.json, adapter_config.json) works from any folder.
inline std::filesystem::path resolve_model_dir(const std::string& model) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(model, ec)) return fs::absolute(model).lexically_normal();
  require(looks_like_hub_id(model), "--model {}: no such folder", model);
  const HubLookup r = find_in_hub_caches(model, HubKind::Model, [](const fs::path& p) {
    std::error_code e;
    return fs::is_regular_file(p / "config.json", e);
  });
  require(r.found.has_value(),
          "--model {}: not a folder, and no copy of this model id (a folder with config.json) in the local caches; "
          "peft never downloads. Looked in:{}\n(download it with `modelscope download --model {}` or "
          "`huggingface-cli download {}`, or pass the folder)",
          model, r.tried_list(), model, model);
  return fs::absolute(*r.found).lexically_normal();
}

}  // namespace peft::io
