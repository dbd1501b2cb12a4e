#include "worker/language_model.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/tensor_source.h"
#include "worker/llama_model.h"
#include "worker/model_config.h"

namespace steadyeval {

absl::StatusOr<std::unique_ptr<LanguageModel>> LoadLanguageModel(const TensorSource& reader) {
  const std::string& context = reader.label();
  auto model_type = ModelTypeOf(reader.config_json());
  if (!model_type.ok()) return Annotate(model_type.status(), context);
  if (*model_type == "llama" || *model_type == "mistral" || *model_type == "qwen2") {
    auto config = ParseLlamaConfig(reader.config_json());
    if (!config.ok()) return Annotate(config.status(), context);
    ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model, LlamaModel::Create(*config, reader));
    return std::unique_ptr<LanguageModel>(std::move(model));
  }
  return absl::UnimplementedError(absl::StrCat(
      context, ": model_type '", *model_type,
      "' is not supported (supported: llama, mistral, qwen2)"));
}

}  // namespace steadyeval
