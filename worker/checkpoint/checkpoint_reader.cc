#include "worker/checkpoint/checkpoint_reader.h"

#include <set>

#include <ATen/ATen.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "worker/checkpoint/pytorch_checkpoint.h"
#include "worker/torch_status.h"

namespace steadyeval {
namespace {

constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";
constexpr char kPytorchFile[] = "pytorch_model.bin";
constexpr char kPytorchIndexFile[] = "pytorch_model.bin.index.json";

// config.json and index files are small; anything larger is not one.
constexpr uint64_t kMaxJsonBytes = 64ull << 20;

bool IsFile(FileSystem& fs, const std::string& path) {
  absl::StatusOr<FileStat> stat = fs.Stat(path);
  return stat.ok() && stat->kind == FileKind::kRegular;
}

}  // namespace

// One weights file: a read-only mapping of a safetensors file, or (file == nullptr) a .bin
// file whose tensors were loaded into the entries.
struct CheckpointReader::Shard {
  std::string path;
  SafetensorsHeader header;  // safetensors only
  std::unique_ptr<MappedFile> file;

  const uint8_t* data() const { return file->data() + header.data_offset; }
};

bool IsIgnoredBuffer(absl::string_view name) {
  return absl::EndsWith(name, ".rotary_emb.inv_freq") || absl::EndsWith(name, ".attn.bias") ||
         absl::EndsWith(name, ".attn.masked_bias");
}

CheckpointReader::CheckpointReader(FileSystem* fs) : fs_(fs) {}
CheckpointReader::~CheckpointReader() = default;

absl::Status CheckpointReader::AddShard(const std::string& file_name) {
  auto shard = std::make_unique<Shard>();
  shard->path = absl::StrCat(dir_, "/", file_name);
  // The header is validated on the mapping itself, so the file mapped is the file checked
  // (its size included: a shard still being written is refused here).
  ASSIGN_OR_RETURN(shard->file, fs_->Map(shard->path));
  ASSIGN_OR_RETURN(shard->header, ParseSafetensorsFile(shard->file->bytes(), shard->path));

  const size_t index = shards_.size();
  shards_.push_back(std::move(shard));
  for (const TensorInfo& info : shards_.back()->header.tensors) {
    RETURN_IF_ERROR(AddEntry(info.name, Entry{index, info, at::Tensor()}));
  }
  return absl::OkStatus();
}

absl::Status CheckpointReader::AddPytorchShard(const std::string& file_name) {
  auto shard = std::make_unique<Shard>();
  shard->path = absl::StrCat(dir_, "/", file_name);
  ASSIGN_OR_RETURN(NamedTensorList tensors, ReadPytorchStateDict(shard->path, fs_));
  const size_t index = shards_.size();
  shards_.push_back(std::move(shard));
  for (auto& [name, tensor] : tensors) {
    Entry entry{index, TensorInfo(), std::move(tensor)};
    entry.info.name = name;
    auto dtype = DTypeOfTorch(entry.loaded.scalar_type());
    if (!dtype.ok()) {  // ReadPytorchStateDict returns only storable dtypes
      return Annotate(dtype.status(),
                      absl::StrCat(shards_.back()->path, ": tensor '", name, "'"));
    }
    entry.info.dtype = *dtype;
    entry.info.shape.assign(entry.loaded.sizes().begin(), entry.loaded.sizes().end());
    entry.info.end = static_cast<uint64_t>(entry.loaded.numel()) * entry.loaded.element_size();
    RETURN_IF_ERROR(AddEntry(name, std::move(entry)));
  }
  return absl::OkStatus();
}

absl::Status CheckpointReader::AddEntry(const std::string& name, Entry entry) {
  const size_t shard = entry.shard;
  auto [it, inserted] = tensors_.emplace(name, std::move(entry));
  if (!inserted) {
    return absl::DataLossError(absl::StrCat("tensor '", name, "' appears in both ",
                                            shards_[it->second.shard]->path, " and ",
                                            shards_[shard]->path));
  }
  return absl::OkStatus();
}

absl::Status CheckpointReader::OpenIndexed(
    const std::string& index_name, absl::Status (CheckpointReader::*add)(const std::string&)) {
  const std::string& d = dir_;
  const std::string index_path = absl::StrCat(d, "/", index_name);
  ASSIGN_OR_RETURN(std::string index_text, fs_->ReadFile(index_path, kMaxJsonBytes));
  nlohmann::json index = nlohmann::json::parse(index_text, nullptr, /*allow_exceptions=*/false);
  if (index.is_discarded() || !index.is_object() || !index.contains("weight_map") ||
      !index["weight_map"].is_object()) {
    return absl::DataLossError(
        absl::StrCat(index_path, ": not valid JSON with a 'weight_map' object"));
  }
  std::map<std::string, std::string> weight_map;
  std::set<std::string> shard_names;
  for (const auto& [tensor, file] : index["weight_map"].items()) {
    if (!file.is_string()) {
      return absl::DataLossError(
          absl::StrCat(index_path, ": weight_map entry '", tensor, "' is not a file name"));
    }
    std::string name = file.get<std::string>();
    if (name.empty() || absl::StrContains(name, "/")) {
      return absl::DataLossError(absl::StrCat(index_path, ": weight_map entry '", tensor,
                                              "' names '", name,
                                              "', which is not a file in the folder"));
    }
    weight_map[tensor] = name;
    shard_names.insert(name);
  }
  if (shard_names.empty()) {
    return absl::DataLossError(absl::StrCat(index_path, ": weight_map is empty"));
  }
  for (const std::string& name : shard_names) {
    if (!IsFile(*fs_, absl::StrCat(d, "/", name))) {
      return absl::NotFoundError(
          absl::StrCat("shard ", name, " listed in ", index_name,
                       " is missing (still being written, or an incomplete copy?)"));
    }
  }
  for (const std::string& name : shard_names) RETURN_IF_ERROR((this->*add)(name));
  for (const auto& [tensor, file] : weight_map) {
    auto it = tensors_.find(tensor);
    if (it == tensors_.end() || shards_[it->second.shard]->path != absl::StrCat(d, "/", file)) {
      return absl::DataLossError(absl::StrCat(index_name, " puts tensor '", tensor, "' in ",
                                              file, ", but that shard does not hold it"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CheckpointReader>> CheckpointReader::Open(const std::string& dir,
                                                                         FileSystem* fs) {
  std::unique_ptr<CheckpointReader> reader(new CheckpointReader(fs));
  reader->dir_ = dir;
  while (reader->dir_.size() > 1 && reader->dir_.back() == '/') reader->dir_.pop_back();
  const std::string& d = reader->dir_;
  reader->label_ = absl::StrCat("checkpoint ", d);

  const std::string config_path = absl::StrCat(d, "/config.json");
  if (!IsFile(*fs, config_path)) {
    return absl::NotFoundError(
        absl::StrCat("checkpoint ", d, ": no config.json (is this a Hugging Face checkpoint folder?)"));
  }
  ASSIGN_OR_RETURN(reader->config_json_, fs->ReadFile(config_path, kMaxJsonBytes));

  const std::string context = absl::StrCat("checkpoint ", d);
  auto present = [&](const char* name) { return IsFile(*fs, absl::StrCat(d, "/", name)); };
  if (present(kIndexFile)) {
    RETURN_IF_ERROR(
        Annotate(reader->OpenIndexed(kIndexFile, &CheckpointReader::AddShard), context));
  } else if (present(kSingleFile)) {
    RETURN_IF_ERROR(Annotate(reader->AddShard(kSingleFile), context));
  } else if (present(kPytorchIndexFile)) {
    RETURN_IF_ERROR(Annotate(
        reader->OpenIndexed(kPytorchIndexFile, &CheckpointReader::AddPytorchShard), context));
  } else if (present(kPytorchFile)) {
    RETURN_IF_ERROR(Annotate(reader->AddPytorchShard(kPytorchFile), context));
  } else {
    return absl::NotFoundError(absl::StrCat(context, ": no weights: none of ", kIndexFile, ", ",
                                            kSingleFile, ", ", kPytorchIndexFile, ", ",
                                            kPytorchFile, " found"));
  }
  return reader;
}

std::vector<std::string> CheckpointReader::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, entry] : tensors_) {
    if (!IsIgnoredBuffer(name)) names.push_back(name);
  }
  return names;
}

bool CheckpointReader::HasTensor(absl::string_view name) const {
  return tensors_.find(name) != tensors_.end();
}

absl::StatusOr<TensorInfo> CheckpointReader::Info(absl::string_view name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat("checkpoint ", dir_, ": tensor '", name,
                                            "' not found (", tensors_.size(),
                                            " tensors present; wrong model family?)"));
  }
  return it->second.info;
}

absl::StatusOr<at::Tensor> CheckpointReader::Tensor(absl::string_view name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return Info(name).status();
  ASSIGN_OR_RETURN(at::Tensor stored, MappedTensor(name));
  return GuardTorch(absl::StrCat(Origin(name), ": tensor '", name, "'"),
                    [&]() -> absl::StatusOr<at::Tensor> {
                      return stored
                          .to(at::kFloat, /*non_blocking=*/false, /*copy=*/true)
                          .contiguous();
                    });
}

std::string CheckpointReader::Origin(absl::string_view name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return label_;
  return shards_[it->second.shard]->path;
}

absl::StatusOr<at::Tensor> CheckpointReader::MappedTensor(absl::string_view name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return Info(name).status();
  const Entry& entry = it->second;
  if (entry.loaded.defined()) return entry.loaded;
  const uint8_t* data = shards_[entry.shard]->data() + entry.info.begin;
  return GuardTorch(absl::StrCat(Origin(name), ": tensor '", name, "'"),
                    [&]() -> absl::StatusOr<at::Tensor> {
                      return at::from_blob(const_cast<uint8_t*>(data), entry.info.shape,
                                              at::TensorOptions()
                                                  .dtype(TorchTypeOf(entry.info.dtype))
                                                  .device(at::kCPU));
                    });
}

void CheckpointReader::DropPages(absl::string_view name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return;
  const Entry& entry = it->second;
  if (entry.loaded.defined()) return;  // held in memory, not mapped
  const Shard& shard = *shards_[entry.shard];
  shard.file->DropPages(shard.header.data_offset + entry.info.begin,
                        entry.info.end - entry.info.begin);
}

}  // namespace steadyeval
