#include "common/safetensors.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "testing/status_matchers.h"
#include "testing/temp_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace steadyeval {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::steadyeval::testing::StatusIs;

constexpr auto kMalformed = absl::StatusCode::kInvalidArgument;
constexpr auto kPartial = absl::StatusCode::kFailedPrecondition;

// Parses `json` as the header of a file with exactly `data_bytes` of data after it.
absl::StatusOr<SafetensorsHeader> Parse(const std::string& json, uint64_t data_bytes) {
  return ParseSafetensorsHeader(json, 8 + json.size() + data_bytes, "t.safetensors");
}

class SafetensorsFileTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& bytes) { return dir_.Write("model.safetensors", bytes); }

  static std::vector<TensorInfo> Tensors() {
    std::vector<TensorInfo> tensors(3);
    tensors[0] = {"embed.weight", DType::kBF16, {4, 3}};
    tensors[1] = {"norm.weight", DType::kF32, {3}};
    tensors[2] = {"scalar", DType::kI64, {}};
    return tensors;
  }

  testing::TempDir dir_;
};

TEST_F(SafetensorsFileTest, RoundTripsThroughBuildSafetensorsHeader) {
  std::vector<TensorInfo> tensors = Tensors();
  const std::string prefix = BuildSafetensorsHeader(tensors, {{"format", "pt"}});
  EXPECT_EQ(prefix.size() % 8, 0u);
  EXPECT_EQ(tensors[0].begin, 0u);
  EXPECT_EQ(tensors[0].end, 24u);
  EXPECT_EQ(tensors[1].begin, 24u);
  EXPECT_EQ(tensors[1].end, 36u);
  EXPECT_EQ(tensors[2].end, 44u);
  const std::string path = Write(prefix + std::string(44, '\x7f'));

  auto header = ReadSafetensorsHeader(path);
  ASSERT_OK(header);
  EXPECT_EQ(header->data_offset, prefix.size());
  EXPECT_EQ(header->data_length, 44u);
  EXPECT_EQ(header->metadata.at("format"), "pt");
  ASSERT_EQ(header->tensors.size(), 3u);
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ(header->tensors[i].name, tensors[i].name);
    EXPECT_EQ(header->tensors[i].dtype, tensors[i].dtype);
    EXPECT_EQ(header->tensors[i].shape, tensors[i].shape);
    EXPECT_EQ(header->tensors[i].begin, tensors[i].begin);
    EXPECT_EQ(header->tensors[i].end, tensors[i].end);
  }
  EXPECT_EQ(header->tensors[2].numel(), 1);
}

TEST_F(SafetensorsFileTest, TruncatedDataIsStillBeingWritten) {
  std::vector<TensorInfo> tensors = Tensors();
  const std::string prefix = BuildSafetensorsHeader(tensors);
  EXPECT_THAT(ReadSafetensorsHeader(Write(prefix + std::string(43, '\0'))),
              StatusIs(kPartial, HasSubstr("still being written?")));
  EXPECT_THAT(ReadSafetensorsHeader(Write(prefix)), StatusIs(kPartial, HasSubstr("still being written?")));
}

TEST_F(SafetensorsFileTest, TruncatedHeaderIsStillBeingWritten) {
  std::vector<TensorInfo> tensors = Tensors();
  const std::string prefix = BuildSafetensorsHeader(tensors);
  EXPECT_THAT(ReadSafetensorsHeader(Write(prefix.substr(0, prefix.size() - 1))),
              StatusIs(kPartial, HasSubstr("its header alone says")));
  EXPECT_THAT(ReadSafetensorsHeader(Write("1234")), StatusIs(kPartial, HasSubstr("too short")));
  EXPECT_THAT(ReadSafetensorsHeader(Write("")), StatusIs(kPartial, HasSubstr("too short")));
}

TEST_F(SafetensorsFileTest, TrailingBytesAreRejected) {
  std::vector<TensorInfo> tensors = Tensors();
  const std::string prefix = BuildSafetensorsHeader(tensors);
  EXPECT_THAT(ReadSafetensorsHeader(Write(prefix + std::string(45, '\0'))),
              StatusIs(kPartial, HasSubstr("trailing bytes")));
}

TEST_F(SafetensorsFileTest, OversizedHeaderLengthIsMalformed) {
  std::string bytes(8, '\0');
  bytes[7] = '\x01';  // 2^56
  bytes += "{}";
  EXPECT_THAT(ReadSafetensorsHeader(Write(bytes)), StatusIs(kMalformed, HasSubstr("limit")));
}

TEST_F(SafetensorsFileTest, MissingFileIsNotFound) {
  EXPECT_THAT(ReadSafetensorsHeader(dir_ / "nope.safetensors"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope.safetensors")));
}

TEST(SafetensorsHeaderTest, BadJsonIsMalformed) {
  EXPECT_THAT(Parse("{\"a\": ", 0), StatusIs(kMalformed, HasSubstr("t.safetensors: header is not valid JSON")));
  EXPECT_THAT(Parse("[]", 0), StatusIs(kMalformed, HasSubstr("not an object")));
  EXPECT_THAT(Parse(R"({"a": 5})", 0), StatusIs(kMalformed, HasSubstr("'a' entry is not an object")));
  EXPECT_THAT(Parse(R"({"__metadata__": {"k": 1}})", 0), StatusIs(kMalformed, HasSubstr("__metadata__")));
}

TEST(SafetensorsHeaderTest, UnknownOrWrongDtypeIsMalformed) {
  EXPECT_THAT(Parse(R"({"a": {"dtype": "F8_E4M3X", "shape": [1], "data_offsets": [0, 1]}})", 1),
              StatusIs(kMalformed, HasSubstr("unknown dtype 'F8_E4M3X'")));
  EXPECT_THAT(Parse(R"({"a": {"dtype": "f32", "shape": [1], "data_offsets": [0, 4]}})", 4),
              StatusIs(kMalformed, HasSubstr("unknown dtype 'f32'")));
  EXPECT_THAT(Parse(R"({"a": {"dtype": 4, "shape": [1], "data_offsets": [0, 4]}})", 4),
              StatusIs(kMalformed, HasSubstr("'a' has no dtype")));
  EXPECT_THAT(Parse(R"({"a": {"shape": [1], "data_offsets": [0, 4]}})", 4),
              StatusIs(kMalformed, HasSubstr("'a' has no dtype")));
}

TEST(SafetensorsHeaderTest, BadShapesAndOffsetsAreMalformed) {
  EXPECT_THAT(Parse(R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4),
              StatusIs(kMalformed, HasSubstr("negative")));
  EXPECT_THAT(Parse(R"({"a": {"dtype": "F32", "data_offsets": [0, 4]}})", 4),
              StatusIs(kMalformed, HasSubstr("no shape")));
  EXPECT_THAT(Parse(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", 4),
              StatusIs(kMalformed, HasSubstr("data_offsets")));
  EXPECT_THAT(Parse(R"({"a": {"dtype": "F32", "shape": [0], "data_offsets": [4, 0]}})", 4),
              StatusIs(kMalformed, HasSubstr("ends before it begins")));
}

TEST(SafetensorsHeaderTest, SizeMustBeNumelTimesItemsize) {
  EXPECT_THAT(Parse(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8),
              StatusIs(kMalformed, HasSubstr("spans 8 bytes but shape and dtype F32 need 12")));
  EXPECT_THAT(Parse(R"({"a": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 16]}})", 16),
              StatusIs(kMalformed, HasSubstr("need 8")));
  EXPECT_OK(Parse(R"({"a": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}})", 8));
}

TEST(SafetensorsHeaderTest, ElementCountOverflowIsMalformed) {
  // 2^32 × 2^32 elements wraps to 0 in 64 bits; it must not pass as an empty tensor.
  EXPECT_THAT(Parse(R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})", 0),
              StatusIs(kMalformed, HasSubstr("overflows")));
  EXPECT_THAT(Parse(R"({"a": {"dtype": "F32", "shape": [9223372036854775808], "data_offsets": [0, 0]}})", 0),
              StatusIs(kMalformed, HasSubstr("overflows")));
}

TEST(SafetensorsHeaderTest, OverlappingOffsetsAreMalformed) {
  EXPECT_THAT(Parse(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                       "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12),
              StatusIs(kMalformed, HasSubstr("overlap")));
  // One tensor inside another.
  EXPECT_THAT(Parse(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                       "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", 16),
              StatusIs(kMalformed, HasSubstr("overlap")));
  // Back to back is fine, in any key order; empty tensors take no room.
  auto ok = Parse(R"({"b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
                      "e": {"dtype": "F32", "shape": [0], "data_offsets": [8, 8]},
                      "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 8);
  ASSERT_OK(ok);
  EXPECT_EQ(ok->data_length, 8u);
  EXPECT_EQ(ok->tensors[0].name, "a");
}

TEST(SafetensorsHeaderTest, FileSizeMustMatchTheHeader) {
  const std::string json = R"({"a": {"dtype": "I8", "shape": [5], "data_offsets": [0, 5]}})";
  EXPECT_OK(Parse(json, 5));
  EXPECT_THAT(Parse(json, 4), StatusIs(kPartial, HasSubstr("still being written?")));
  EXPECT_THAT(Parse(json, 6), StatusIs(kPartial, HasSubstr("trailing bytes")));
  EXPECT_OK(Parse("{}", 0));
}

TEST(DTypeTest, NamesSizesRoundTrip) {
  for (DType d : {DType::kF64, DType::kF32, DType::kF16, DType::kBF16, DType::kI64, DType::kI32,
                  DType::kI16, DType::kI8, DType::kU8, DType::kBool}) {
    auto parsed = ParseDType(DTypeName(d));
    ASSERT_OK(parsed);
    EXPECT_EQ(*parsed, d);
    EXPECT_GT(DTypeSize(d), 0u);
  }
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kF64), 8u);
  EXPECT_TRUE(IsFloating(DType::kBF16));
  EXPECT_FALSE(IsFloating(DType::kI32));
  EXPECT_THAT(ParseDType("F12"), StatusIs(kMalformed, HasSubstr("unknown dtype")));
}

}  // namespace
}  // namespace steadyeval
