// Hub ids found where ModelScope and Hugging Face users have them on disk (io/hub_cache.hpp): the
// ModelScope cache (both layouts, both spellings of '.'), then the HF cache (refs/main names the
// snapshot), then PEFT_DATA_HOME; a miss lists every path tried. The caches are fake folders in
// a temp dir, and the environment is the test's own (HOME, MODELSCOPE_CACHE, HF_HOME ...).
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>

#include "fixtures/datasets/dataset_test_support.hpp"
#include "peft/data/dataset_loader.hpp"
#include "peft/io/hub_cache.hpp"

namespace fs = std::filesystem;
using namespace peft::io;
using Catch::Matchers::Contains;

namespace {

struct FakeEnv {
  std::map<std::string, std::string> vars;
  EnvLookup lookup() const {
    return [this](const char* n) -> const char* {
      const auto it = vars.find(n);
      return it == vars.end() ? nullptr : it->second.c_str();
    };
  }
};

bool has_config(const fs::path& p) { return fs::is_regular_file(p / "config.json"); }

// Sets the variables for the test's scope (resolve_model_dir and the dataset lookup read the real
// environment), restoring what was there.
struct ScopedEnv {
  std::map<std::string, std::optional<std::string>> saved;
  ScopedEnv(std::initializer_list<std::pair<const char*, std::string>> vars) {
    for (const char* n : {"HOME", "XDG_CACHE_HOME", "MODELSCOPE_CACHE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
                          "HF_HOME", "PEFT_DATA_HOME"}) {
      const char* v = std::getenv(n);
      saved[n] = v ? std::optional<std::string>(v) : std::nullopt;
      ::unsetenv(n);
    }
    for (const auto& [n, v] : vars) ::setenv(n, v.c_str(), 1);
  }
  ~ScopedEnv() {
    for (const auto& [n, v] : saved) {
      if (v) ::setenv(n.c_str(), v->c_str(), 1);
      else ::unsetenv(n.c_str());
    }
  }
};

}  // namespace

TEST_CASE("a model id is found in the ModelScope cache under HOME, new and old layouts") {
  peft::testing::TempDir home;
  FakeEnv env{{{"HOME", home.path().string()}}};
  const fs::path ms = home.path() / ".cache/modelscope/hub";
  home.write(".cache/modelscope/hub/Qwen/Qwen2.5-0.5B/config.json", "{}");  // older modelscope
  auto r = find_in_hub_caches("Qwen/Qwen2.5-0.5B", HubKind::Model, has_config, env.lookup());
  REQUIRE(r.found);
  CHECK(*r.found == ms / "Qwen/Qwen2.5-0.5B");
  home.write(".cache/modelscope/hub/models/Qwen/Qwen2___5-0___5B/config.json", "{}");  // newer: '.' -> "___"
  r = find_in_hub_caches("Qwen/Qwen2.5-0.5B", HubKind::Model, has_config, env.lookup());
  REQUIRE(r.found);
  CHECK(*r.found == ms / "models/Qwen/Qwen2___5-0___5B");
}

TEST_CASE("MODELSCOPE_CACHE replaces the default ModelScope folder") {
  peft::testing::TempDir home;
  const fs::path ms = home.path() / "ms";
  home.write("ms/models/Qwen/Qwen2.5-7B-Instruct/config.json", "{}");
  FakeEnv env{{{"HOME", (home.path() / "nohome").string()}, {"MODELSCOPE_CACHE", ms.string()}}};
  const auto r = find_in_hub_caches("Qwen/Qwen2.5-7B-Instruct", HubKind::Model, has_config, env.lookup());
  REQUIRE(r.found);
  CHECK(*r.found == ms / "models/Qwen/Qwen2.5-7B-Instruct");
}

TEST_CASE("the HF cache: refs/main names the snapshot / else the only one / HF_HUB_CACHE and HF_HOME") {
  peft::testing::TempDir home;
  FakeEnv env{{{"HOME", home.path().string()}}};
  const fs::path repo = home.path() / ".cache/huggingface/hub/models--Qwen--Qwen2.5-7B-Instruct";
  home.write(".cache/huggingface/hub/models--Qwen--Qwen2.5-7B-Instruct/snapshots/aaa/config.json", "{}");
  auto r = find_in_hub_caches("Qwen/Qwen2.5-7B-Instruct", HubKind::Model, has_config, env.lookup());
  REQUIRE(r.found);
  CHECK(*r.found == repo / "snapshots/aaa");  // the only snapshot
  home.write(".cache/huggingface/hub/models--Qwen--Qwen2.5-7B-Instruct/snapshots/bbb/config.json", "{}");
  r = find_in_hub_caches("Qwen/Qwen2.5-7B-Instruct", HubKind::Model, has_config, env.lookup());
  CHECK(!r.found);  // two revisions, no refs/main: neither is taken
  home.write(".cache/huggingface/hub/models--Qwen--Qwen2.5-7B-Instruct/refs/main", "bbb\n");
  r = find_in_hub_caches("Qwen/Qwen2.5-7B-Instruct", HubKind::Model, has_config, env.lookup());
  REQUIRE(r.found);
  CHECK(*r.found == repo / "snapshots/bbb");

  home.write("hfhome/hub/models--Qwen--Qwen2.5-7B-Instruct/snapshots/ccc/config.json", "{}");
  env.vars["HF_HOME"] = (home.path() / "hfhome").string();
  r = find_in_hub_caches("Qwen/Qwen2.5-7B-Instruct", HubKind::Model, has_config, env.lookup());
  REQUIRE(r.found);
  CHECK(*r.found == home.path() / "hfhome/hub/models--Qwen--Qwen2.5-7B-Instruct/snapshots/ccc");
  home.write("hubcache/models--Qwen--Qwen2.5-7B-Instruct/snapshots/ddd/config.json", "{}");
  env.vars["HF_HUB_CACHE"] = (home.path() / "hubcache").string();
  r = find_in_hub_caches("Qwen/Qwen2.5-7B-Instruct", HubKind::Model, has_config, env.lookup());
  REQUIRE(r.found);
  CHECK(*r.found == home.path() / "hubcache/models--Qwen--Qwen2.5-7B-Instruct/snapshots/ddd");
}

TEST_CASE("ModelScope wins over HF, HF over PEFT_DATA_HOME - a folder the caller refuses is passed over") {
  peft::testing::TempDir home;
  FakeEnv env{{{"HOME", home.path().string()}, {"PEFT_DATA_HOME", (home.path() / "data").string()}}};
  home.write("data/Qwen/Tiny/config.json", "{}");
  auto r = find_in_hub_caches("Qwen/Tiny", HubKind::Model, has_config, env.lookup());
  REQUIRE(r.found);
  CHECK(*r.found == home.path() / "data/Qwen/Tiny");
  home.write(".cache/huggingface/hub/models--Qwen--Tiny/snapshots/r1/config.json", "{}");
  r = find_in_hub_caches("Qwen/Tiny", HubKind::Model, has_config, env.lookup());
  CHECK(*r.found == home.path() / ".cache/huggingface/hub/models--Qwen--Tiny/snapshots/r1");
  home.write(".cache/modelscope/hub/models/Qwen/Tiny/README.md", "no config here");
  r = find_in_hub_caches("Qwen/Tiny", HubKind::Model, has_config, env.lookup());
  CHECK(*r.found == home.path() / ".cache/huggingface/hub/models--Qwen--Tiny/snapshots/r1");
  home.write(".cache/modelscope/hub/models/Qwen/Tiny/config.json", "{}");
  r = find_in_hub_caches("Qwen/Tiny", HubKind::Model, has_config, env.lookup());
  CHECK(*r.found == home.path() / ".cache/modelscope/hub/models/Qwen/Tiny");
}

TEST_CASE("resolve_model_dir: a folder as given (absolute), an id from the caches, a miss lists every path") {
  peft::testing::TempDir home;
  home.write("m/config.json", "{}");
  home.write(".cache/huggingface/hub/models--Org--Model/snapshots/r/config.json", "{}");
  ScopedEnv scoped{{"HOME", home.path().string()}, {"PEFT_DATA_HOME", (home.path() / "data").string()}};
  CHECK(resolve_model_dir((home.path() / "m").string()) == home.path() / "m");
  CHECK(resolve_model_dir("Org/Model") == home.path() / ".cache/huggingface/hub/models--Org--Model/snapshots/r");
  CHECK_THROWS_WITH(resolve_model_dir("Org/Missing"),
                    Contains("no copy of this model id") && Contains("never downloads") &&
                        Contains((home.path() / ".cache/modelscope/hub/models/Org/Missing").string()) &&
                        Contains((home.path() / ".cache/modelscope/hub/Org/Missing").string()) &&
                        Contains((home.path() / ".cache/huggingface/hub/models--Org--Missing").string()) &&
                        Contains((home.path() / "data/Org/Missing").string()));
  CHECK_THROWS_WITH(resolve_model_dir("./not/a/folder"), Contains("./not/a/folder: no such folder"));
}

TEST_CASE("dataset ids: the ModelScope and HF dataset caches, subfolders, and id:subset") {
  peft::testing::TempDir home;
  const std::string row = "{\"input_ids\": [1, 2, 3]}\n";
  ScopedEnv scoped{{"HOME", home.path().string()}};
  const fs::path hf_file =
      home.write(".cache/huggingface/hub/datasets--org--set/snapshots/r1/data/train.jsonl", row);
  home.write(".cache/huggingface/hub/datasets--org--set/refs/main", "r1");
  home.write(".cache/huggingface/hub/datasets--org--set/snapshots/r1/.cache/ignored.jsonl", row);
  auto spec = peft::data::resolve_dataset_spec("org/set#2", {});
  CHECK(spec.sample_count == 2);
  CHECK(spec.files == std::vector<fs::path>{hf_file});

  const fs::path zh = home.write(".cache/modelscope/hub/datasets/org/multi/zh/part.csv", "query,response\nq,r\n");
  home.write(".cache/modelscope/hub/datasets/org/multi/en/part.jsonl", row);
  spec = peft::data::resolve_dataset_spec("org/multi:zh", {});
  CHECK(spec.subset == "zh");
  CHECK(spec.files == std::vector<fs::path>{zh});
  spec = peft::data::resolve_dataset_spec("org/multi:default#5", {});
  CHECK(spec.files.size() == 2);
  CHECK(spec.sample_count == 5);
  CHECK_THROWS_WITH(peft::data::resolve_dataset_spec("org/multi:fr", {}),
                    Contains("subset 'fr' not found") &&
                        Contains((home.path() / ".cache/modelscope/hub/datasets/org/multi").string()));
}
