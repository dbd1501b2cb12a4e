// CheckpointReader over the committed tiny Llama fixtures (tests/fixtures/llama/, written
// by `/usr/bin/python3 tests/reference/llama_reference.py`), the same gqa weights in other
// formats (tests/fixtures/formats/, written by
// `/usr/bin/python3 tests/reference/make_format_fixtures.py` with torch.save from Debian's
// python3-torch 1.13), and damaged copies of them.
#include "worker/checkpoint/checkpoint_reader.h"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>

#include <ATen/ATen.h>

#include "common/fake_file_system.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/model/language_model.h"
#include "worker/test_fixtures.h"

namespace steadyeval {
namespace {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace testing_fixtures;

std::string FormatFixture(const std::string& name) {
  return SourceDir() + "/tests/fixtures/formats/" + name;
}

// A scratch checkpoint folder: gqa's config.json plus tests/fixtures/formats/bin_edge/`file`
// as pytorch_model.bin.
std::string BinEdgeCheckpoint(const std::string& file) {
  std::string dir = ScratchDir("ckpt");
  std::filesystem::copy_file(LlamaFixture("gqa") + "/config.json", dir + "/config.json");
  std::filesystem::copy_file(FormatFixture("bin_edge/" + file), dir + "/pytorch_model.bin");
  return dir;
}

// Every tensor of `reader` equals gqa's, bit for bit, and no tensor is missing.
void ExpectSameTensorsAsGqa(const CheckpointReader& reader) {
  auto gqa = CheckpointReader::Open(LlamaFixture("gqa"));
  ASSERT_OK(gqa);
  EXPECT_EQ(reader.TensorNames(), (*gqa)->TensorNames());
  for (const std::string& name : (*gqa)->TensorNames()) {
    auto want = (*gqa)->Tensor(name);
    auto got = reader.Tensor(name);
    ASSERT_OK(want);
    ASSERT_OK(got) << name;
    EXPECT_EQ(got->scalar_type(), at::kFloat) << name;
    EXPECT_TRUE(got->is_contiguous()) << name;
    EXPECT_TRUE(at::equal(*got, *want)) << name;
    auto info = reader.Info(name);
    ASSERT_OK(info);
    EXPECT_EQ(info->dtype, DType::kF32) << name;
    EXPECT_EQ(info->shape, std::vector<int64_t>(want->sizes().begin(), want->sizes().end()));
  }
}

// Rewrites the safetensors file at `path` with its header JSON passed through `edit`.
void EditSafetensorsHeader(const std::string& path,
                           const std::function<void(nlohmann::json&)>& edit) {
  std::string bytes = ReadText(path);
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = (length << 8) | static_cast<uint8_t>(bytes[i]);
  nlohmann::json header = nlohmann::json::parse(bytes.substr(8, length));
  edit(header);
  std::string text = header.dump();
  while (text.size() % 8 != 0) text.push_back(' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((text.size() >> (8 * i)) & 0xff);
  WriteText(path, out + text + bytes.substr(8 + length));
}

TEST(CheckpointReaderTest, OpensSingleFileAndIgnoresBuffers) {
  auto reader = CheckpointReader::Open(LlamaFixture("gqa"));
  ASSERT_OK(reader);
  std::vector<std::string> names = (*reader)->TensorNames();
  // embed + 2 layers x 9 + norm + lm_head; the rotary inv_freq buffer is not listed.
  EXPECT_EQ(names.size(), 21u);
  EXPECT_THAT(names, Contains("lm_head.weight"));
  EXPECT_THAT(names, Not(Contains("model.layers.0.self_attn.rotary_emb.inv_freq")));
  EXPECT_TRUE((*reader)->HasTensor("model.layers.0.self_attn.rotary_emb.inv_freq"));
  EXPECT_THAT((*reader)->config_json(), HasSubstr("\"model_type\": \"llama\""));

  auto t = (*reader)->Tensor("model.layers.1.self_attn.k_proj.weight");
  ASSERT_OK(t);
  EXPECT_EQ(t->scalar_type(), at::kFloat);
  EXPECT_EQ(t->sizes(), (std::vector<int64_t>{16, 32}));
  EXPECT_TRUE(t->is_contiguous());
}

TEST(CheckpointReaderTest, ConvertsHalfPrecisionToFloat32) {
  for (const char* name : {"bf16", "fp16"}) {
    auto reader = CheckpointReader::Open(LlamaFixture(name));
    ASSERT_OK(reader);
    auto info = (*reader)->Info("model.norm.weight");
    ASSERT_OK(info);
    EXPECT_EQ(info->dtype, std::string(name) == "bf16" ? DType::kBF16 : DType::kF16);
    auto t = (*reader)->Tensor("model.norm.weight");
    ASSERT_OK(t);
    EXPECT_EQ(t->scalar_type(), at::kFloat);
    // Norm weights are 1 + 0.1·N(0,1): a wrong conversion would be far off.
    EXPECT_NEAR(t->mean().item<double>(), 1.0, 0.1) << name;
  }
}

TEST(CheckpointReaderTest, OpensShardedCheckpoint) {
  auto reader = CheckpointReader::Open(LlamaFixture("sharded"));
  ASSERT_OK(reader);
  std::vector<std::string> names = (*reader)->TensorNames();
  EXPECT_EQ(names.size(), 21u);
  // One tensor from each shard.
  EXPECT_OK((*reader)->Tensor("model.embed_tokens.weight"));
  EXPECT_OK((*reader)->Tensor("lm_head.weight"));
}

TEST(CheckpointReaderTest, MissingTensorIsNamed) {
  auto reader = CheckpointReader::Open(LlamaFixture("tied"));
  ASSERT_OK(reader);
  EXPECT_THAT((*reader)->Tensor("lm_head.weight"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("'lm_head.weight'")));
  EXPECT_THAT((*reader)->Info("model.layers.7.mlp.up_proj.weight"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("model.layers.7.mlp.up_proj.weight")));
}

TEST(CheckpointReaderTest, MissingShardIsNamed) {
  std::string dir = CopyFixture(LlamaFixture("sharded"), "ckpt");
  std::filesystem::remove(dir + "/model-00002-of-00002.safetensors");
  EXPECT_THAT(CheckpointReader::Open(dir),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("shard model-00002-of-00002.safetensors")));
}

TEST(CheckpointReaderTest, TruncatedShardIsRejected) {
  std::string dir = CopyFixture(LlamaFixture("gqa"), "ckpt");
  const std::string file = dir + "/model.safetensors";
  std::filesystem::resize_file(file, std::filesystem::file_size(file) - 100);
  EXPECT_THAT(CheckpointReader::Open(dir),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("model.safetensors")));
}

TEST(CheckpointReaderTest, IndexNamingTensorAbsentFromShardIsDataLoss) {
  std::string dir = CopyFixture(LlamaFixture("sharded"), "ckpt");
  nlohmann::json index = ReadJson(dir + "/model.safetensors.index.json");
  index["weight_map"]["model.extra.weight"] = "model-00001-of-00002.safetensors";
  WriteText(dir + "/model.safetensors.index.json", index.dump());
  EXPECT_THAT(CheckpointReader::Open(dir),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("model.extra.weight")));
}

TEST(CheckpointReaderTest, MissingConfigOrWeights) {
  std::string dir = CopyFixture(LlamaFixture("gqa"), "ckpt");
  std::filesystem::remove(dir + "/model.safetensors");
  EXPECT_THAT(CheckpointReader::Open(dir),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("model.safetensors")));
  std::filesystem::remove(dir + "/config.json");
  EXPECT_THAT(CheckpointReader::Open(dir),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("config.json")));
}

TEST(CheckpointReaderTest, TensorsOutliveNothingButTheReader) {
  at::Tensor copy;
  {
    auto reader = CheckpointReader::Open(LlamaFixture("gqa"));
    ASSERT_OK(reader);
    auto t = (*reader)->Tensor("model.norm.weight");
    ASSERT_OK(t);
    copy = *t;
  }
  // The returned tensor is a copy: still readable after the mapping is gone.
  EXPECT_EQ(copy.numel(), 32);
  EXPECT_TRUE(std::isfinite(copy.sum().item<double>()));
}

// ---- Formats and their priority ---------------------------------------------------------

TEST(CheckpointReaderTest, OpensShardedSafetensorsWithOrigins) {
  const std::string dir = FormatFixture("safetensors_sharded");
  auto reader = CheckpointReader::Open(dir);
  ASSERT_OK(reader);
  ExpectSameTensorsAsGqa(**reader);
  EXPECT_EQ((*reader)->Origin("model.embed_tokens.weight"),
            dir + "/model-00001-of-00003.safetensors");
  EXPECT_EQ((*reader)->Origin("lm_head.weight"), dir + "/model-00003-of-00003.safetensors");
  EXPECT_EQ((*reader)->Origin("no.such.tensor"), (*reader)->label());
}

TEST(CheckpointReaderTest, OpensPytorchBin) {
  // torch.save of an OrderedDict with a _metadata attribute (torch.save(model.state_dict())).
  const std::string dir = FormatFixture("bin");
  auto reader = CheckpointReader::Open(dir);
  ASSERT_OK(reader);
  ExpectSameTensorsAsGqa(**reader);
  EXPECT_TRUE((*reader)->HasTensor("model.layers.0.self_attn.rotary_emb.inv_freq"));
  EXPECT_EQ((*reader)->Origin("model.norm.weight"), dir + "/pytorch_model.bin");
  // MappedTensor gives the loaded tensor itself: no copy, stored dtype.
  auto a = (*reader)->MappedTensor("model.norm.weight");
  auto b = (*reader)->MappedTensor("model.norm.weight");
  ASSERT_OK(a);
  ASSERT_OK(b);
  EXPECT_EQ(a->data_ptr(), b->data_ptr());
  EXPECT_EQ(a->scalar_type(), at::kFloat);
  (*reader)->DropPages("model.norm.weight");  // a no-op for memory-held tensors
  EXPECT_TRUE(at::equal(*a, *(*reader)->Tensor("model.norm.weight")));
}

TEST(CheckpointReaderTest, OpensShardedPytorchBinWithOrigins) {
  const std::string dir = FormatFixture("bin_sharded");
  auto reader = CheckpointReader::Open(dir);
  ASSERT_OK(reader);
  ExpectSameTensorsAsGqa(**reader);
  EXPECT_EQ((*reader)->Origin("model.embed_tokens.weight"),
            dir + "/pytorch_model-00001-of-00002.bin");
  EXPECT_EQ((*reader)->Origin("lm_head.weight"), dir + "/pytorch_model-00002-of-00002.bin");
}

TEST(CheckpointReaderTest, PytorchViewsOfOneStorageStayShared) {
  auto reader = CheckpointReader::Open(FormatFixture("bin_views"));
  ASSERT_OK(reader);
  ExpectSameTensorsAsGqa(**reader);
  auto embed = (*reader)->MappedTensor("model.embed_tokens.weight");
  auto head = (*reader)->MappedTensor("lm_head.weight");
  ASSERT_OK(embed);
  ASSERT_OK(head);
  // One storage on disk, one in memory; the head is a transposed view of it.
  EXPECT_TRUE(embed->storage().is_alias_of(head->storage()));
  EXPECT_FALSE(head->is_contiguous());
  EXPECT_EQ(head->sizes(), (std::vector<int64_t>{420, 32}));
  EXPECT_EQ(head->strides(), (std::vector<int64_t>{1, 420}));
}

TEST(CheckpointReaderTest, PytorchBinKeepsStoredDtypes) {
  auto reader = CheckpointReader::Open(BinEdgeCheckpoint("dtypes.bin"));
  ASSERT_OK(reader);
  const std::vector<std::pair<std::string, DType>> want = {
      {"bf16", DType::kBF16}, {"bool", DType::kBool}, {"f16", DType::kF16},
      {"f64", DType::kF64},   {"i64", DType::kI64}};
  ASSERT_EQ((*reader)->TensorNames().size(), want.size());
  for (const auto& [name, dtype] : want) {
    auto info = (*reader)->Info(name);
    ASSERT_OK(info);
    EXPECT_EQ(info->dtype, dtype) << name;
    EXPECT_EQ(info->begin, 0u);
    EXPECT_EQ(info->end, info->numel() * DTypeSize(dtype)) << name;
    auto mapped = (*reader)->MappedTensor(name);
    ASSERT_OK(mapped);
    EXPECT_EQ(mapped->scalar_type(), TorchTypeOf(dtype)) << name;
  }
  auto values = [&](const std::string& name) {
    at::Tensor t = *(*reader)->Tensor(name);
    EXPECT_EQ(t.scalar_type(), at::kFloat);
    return std::vector<float>(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
  };
  EXPECT_EQ(values("f64"), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(values("i64"), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(values("bool"), (std::vector<float>{1, 0, 1}));
  EXPECT_EQ(values("f16"), (std::vector<float>{0.5f, 3.0f}));
  EXPECT_EQ(values("bf16"), (std::vector<float>{0.25f, -8.0f}));
}

TEST(CheckpointReaderTest, FormatPriorityFollowsCompletenessOrder) {
  // Each folder holds one valid format plus garbage files of every lower-priority format:
  // the valid one must win without the garbage being read.
  const std::string garbage = "not a checkpoint";
  {
    std::string dir = CopyFixture(FormatFixture("safetensors_sharded"), "index_first");
    WriteText(dir + "/model.safetensors", garbage);
    WriteText(dir + "/pytorch_model.bin.index.json", garbage);
    WriteText(dir + "/pytorch_model.bin", garbage);
    auto reader = CheckpointReader::Open(dir);
    ASSERT_OK(reader);
    EXPECT_EQ((*reader)->Origin("lm_head.weight"), dir + "/model-00003-of-00003.safetensors");
  }
  {
    std::string dir = CopyFixture(LlamaFixture("gqa"), "single_second");
    WriteText(dir + "/pytorch_model.bin.index.json", garbage);
    WriteText(dir + "/pytorch_model.bin", garbage);
    auto reader = CheckpointReader::Open(dir);
    ASSERT_OK(reader);
    EXPECT_EQ((*reader)->Origin("lm_head.weight"), dir + "/model.safetensors");
  }
  {
    std::string dir = CopyFixture(FormatFixture("bin_sharded"), "bin_index_third");
    WriteText(dir + "/pytorch_model.bin", garbage);
    auto reader = CheckpointReader::Open(dir);
    ASSERT_OK(reader);
    EXPECT_EQ((*reader)->Origin("lm_head.weight"), dir + "/pytorch_model-00002-of-00002.bin");
  }
  {
    // And the other way round: a damaged higher-priority file is an error, never skipped.
    std::string dir = CopyFixture(FormatFixture("bin"), "garbage_wins");
    WriteText(dir + "/model.safetensors", garbage);
    EXPECT_THAT(CheckpointReader::Open(dir), Not(IsOk()));
  }
}

// ---- Corrupt inputs name the file (and the tensor) -------------------------------------

TEST(CheckpointReaderTest, BadHeaderJsonNamesTheShard) {
  std::string dir = CopyFixture(FormatFixture("safetensors_sharded"), "ckpt");
  const std::string shard = dir + "/model-00002-of-00003.safetensors";
  std::string bytes = ReadText(shard);
  bytes[8] = '#';  // the header's opening brace
  WriteText(shard, bytes);
  EXPECT_THAT(CheckpointReader::Open(dir),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("model-00002-of-00003.safetensors"),
                             HasSubstr("not valid JSON"))));
}

TEST(CheckpointReaderTest, UnknownSafetensorsDtypeNamesFileAndTensor) {
  std::string dir = CopyFixture(LlamaFixture("gqa"), "ckpt");
  EditSafetensorsHeader(dir + "/model.safetensors", [](nlohmann::json& header) {
    header["model.norm.weight"]["dtype"] = "F8_E4M3";
  });
  EXPECT_THAT(CheckpointReader::Open(dir),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(dir + "/model.safetensors"),
                             HasSubstr("'model.norm.weight'"), HasSubstr("F8_E4M3"))));
}

TEST(CheckpointReaderTest, MissingPytorchShardIsNamed) {
  std::string dir = CopyFixture(FormatFixture("bin_sharded"), "ckpt");
  std::filesystem::remove(dir + "/pytorch_model-00002-of-00002.bin");
  EXPECT_THAT(CheckpointReader::Open(dir),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr("shard pytorch_model-00002-of-00002.bin"),
                             HasSubstr("pytorch_model.bin.index.json"))));
}

TEST(CheckpointReaderTest, TruncatedPytorchBinNamesTheFile) {
  std::string dir = CopyFixture(FormatFixture("bin_sharded"), "ckpt");
  const std::string shard = dir + "/pytorch_model-00001-of-00002.bin";
  std::filesystem::resize_file(shard, std::filesystem::file_size(shard) / 2);
  EXPECT_THAT(CheckpointReader::Open(dir),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(shard)));
}

TEST(CheckpointReaderTest, GarbagePytorchBinNamesTheFile) {
  for (const std::string& garbage : {std::string("PK\x03\x04 and then nothing useful"),
                                     std::string("<html>404</html>"), std::string()}) {
    std::string dir = CopyFixture(FormatFixture("bin"), "ckpt");
    WriteText(dir + "/pytorch_model.bin", garbage);
    EXPECT_THAT(CheckpointReader::Open(dir),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr(dir + "/pytorch_model.bin")))
        << garbage;
  }
}

TEST(CheckpointReaderTest, LegacyPytorchFormatIsExplained) {
  const std::string dir = BinEdgeCheckpoint("legacy.bin");
  EXPECT_THAT(CheckpointReader::Open(dir),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(dir + "/pytorch_model.bin"), HasSubstr("legacy"))));
}

TEST(CheckpointReaderTest, UnsupportedPytorchDtypeNamesFileAndTensor) {
  const std::string dir = BinEdgeCheckpoint("complex.bin");
  EXPECT_THAT(CheckpointReader::Open(dir),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(dir + "/pytorch_model.bin"),
                             HasSubstr("'model.norm.weight'"), HasSubstr("ComplexFloat"))));
}

TEST(CheckpointReaderTest, NonTensorEntryIsRejectedWithReason) {
  const std::string dir = BinEdgeCheckpoint("training.bin");
  EXPECT_THAT(CheckpointReader::Open(dir),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(dir + "/pytorch_model.bin"), HasSubstr("entry 'model'"),
                             HasSubstr("not a tensor"))));
}

TEST(CheckpointReaderTest, EveryDamagedByteOfABinFailsCleanly) {
  // Inverting any single byte of a small .bin (zip headers, pickle program, tensor bytes)
  // gives either a reader or an error status: never a crash, hang or exception.
  const std::string original = ReadText(FormatFixture("bin_edge/dtypes.bin"));
  const std::string dir = BinEdgeCheckpoint("dtypes.bin");
  int failures = 0;
  for (size_t i = 0; i < original.size(); ++i) {
    std::string damaged = original;
    damaged[i] = static_cast<char>(~damaged[i]);
    WriteText(dir + "/pytorch_model.bin", damaged);
    auto reader = CheckpointReader::Open(dir);
    if (!reader.ok()) {
      ++failures;
      EXPECT_THAT(std::string(reader.status().message()), HasSubstr("pytorch_model.bin")) << i;
    }
  }
  // libtorch 1.13 does not check the zip's CRC-32, so damaged tensor bytes go unnoticed.
  EXPECT_GT(failures, 0);
}

TEST(CheckpointReaderTest, WrongShapeIsReportedWithItsShard) {
  // config.json says intermediate_size 48; the MLP weights are [64, 32] / [32, 64].
  std::string dir = CopyFixture(FormatFixture("bin_sharded"), "ckpt");
  nlohmann::json config = ReadJson(dir + "/config.json");
  config["intermediate_size"] = 48;
  WriteText(dir + "/config.json", config.dump());
  auto reader = CheckpointReader::Open(dir);
  ASSERT_OK(reader);
  auto model = LoadLanguageModel(**reader);
  ASSERT_THAT(model, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("mlp.")));
  // The loader names the tensor and where it came from: reader.Origin(tensor), its shard.
  const std::string message(model.status().message());
  const size_t quote = message.find("'model.layers.");
  ASSERT_NE(quote, std::string::npos) << message;
  const std::string tensor = message.substr(quote + 1, message.find('\'', quote + 1) - quote - 1);
  const std::string shard = (*reader)->Origin(tensor);
  EXPECT_THAT(shard, testing::StartsWith(dir + "/pytorch_model-0000"));
  EXPECT_THAT(message, HasSubstr(shard));
}

// The files of the local folder `from` copied into `fs` under `to`.
void CopyIntoFake(const std::string& from, FakeFileSystem& fs, const std::string& to) {
  for (const auto& entry : std::filesystem::directory_iterator(from)) {
    fs.WriteFile(to + "/" + entry.path().filename().string(), ReadText(entry.path().string()));
  }
}

TEST(CheckpointReaderTest, ReadsEveryFormatThroughTheFileSystemItIsGiven) {
  // The folders exist only in the fake: a reader that went around it would find nothing.
  for (const std::string& fixture :
       {LlamaFixture("gqa"), LlamaFixture("bf16"), LlamaFixture("sharded"), FormatFixture("bin"),
        FormatFixture("bin_sharded"), FormatFixture("bin_views")}) {
    FakeFileSystem fs;
    CopyIntoFake(fixture, fs, "/fake/ckpt");
    auto on_disk = CheckpointReader::Open(fixture);
    ASSERT_OK(on_disk);
    auto in_fake = CheckpointReader::Open("/fake/ckpt", &fs);
    ASSERT_OK(in_fake) << fixture;
    EXPECT_EQ((*in_fake)->config_json(), (*on_disk)->config_json());
    ASSERT_EQ((*in_fake)->TensorNames(), (*on_disk)->TensorNames()) << fixture;
    for (const std::string& name : (*on_disk)->TensorNames()) {
      auto want = (*on_disk)->MappedTensor(name);
      auto got = (*in_fake)->MappedTensor(name);
      ASSERT_OK(want);
      ASSERT_OK(got);
      EXPECT_TRUE(at::equal(*got, *want)) << fixture << " " << name;
      EXPECT_THAT((*in_fake)->Origin(name), testing::StartsWith("/fake/ckpt/"));
      (*in_fake)->DropPages(name);  // a no-op on a copy in memory
    }
  }
}

TEST(CheckpointReaderTest, FileSystemErrorsAndPartialShardsReachTheCaller) {
  FakeFileSystem fs;
  CopyIntoFake(LlamaFixture("sharded"), fs, "/fake/ckpt");
  const std::string shard = "/fake/ckpt/model-00002-of-00002.safetensors";
  fs.InjectError(FakeFileSystem::Op::kRead, shard, absl::UnavailableError("injected: reset"));
  EXPECT_THAT(CheckpointReader::Open("/fake/ckpt", &fs),
              StatusIs(absl::StatusCode::kUnavailable,
                       AllOf(HasSubstr("checkpoint /fake/ckpt"), HasSubstr("injected: reset"))));
  fs.ClearErrors();
  EXPECT_OK(CheckpointReader::Open("/fake/ckpt", &fs));

  const uint64_t size = fs.Stat(shard)->size;
  fs.Resize(shard, size - 100);  // still being written
  EXPECT_THAT(CheckpointReader::Open("/fake/ckpt", &fs),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(shard), HasSubstr("still being written"))));
  fs.Remove(shard);
  EXPECT_THAT(CheckpointReader::Open("/fake/ckpt", &fs),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("shard model-00002-of-00002.safetensors")));
}

}  // namespace
}  // namespace steadyeval
