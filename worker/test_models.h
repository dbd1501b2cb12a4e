// Test-only helpers over libtorch: loading a committed fixture model, building id tensors.
#ifndef STEADYEVAL_WORKER_TEST_MODELS_H_
#define STEADYEVAL_WORKER_TEST_MODELS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "worker/checkpoint_reader.h"
#include "worker/language_model.h"
#include "worker/test_fixtures.h"

namespace steadyeval {
namespace testing_fixtures {

// The model of fixture folder tests/fixtures/llama/`name`; null (with a test failure) when
// it does not load.
inline std::unique_ptr<LanguageModel> LoadFixtureModel(const std::string& name) {
  auto reader = CheckpointReader::Open(LlamaFixture(name));
  EXPECT_OK(reader);
  if (!reader.ok()) return nullptr;
  auto model = LoadLanguageModel(**reader);
  EXPECT_OK(model);
  return model.ok() ? *std::move(model) : nullptr;
}

// A [1, T] int64 batch of `ids`.
inline torch::Tensor Ids(const std::vector<int64_t>& ids) {
  return torch::tensor(ids, torch::kInt64).view({1, -1});
}

}  // namespace testing_fixtures
}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_TEST_MODELS_H_
