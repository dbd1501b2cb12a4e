#include "common/keys.h"

#include <algorithm>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/escaping.h"
#include "testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace steadyeval {
namespace {

using Tuple = std::tuple<std::string, uint64_t, std::string>;
using ::steadyeval::testing::StatusIs;

// Short strings over bytes that stress the escaping: NUL, the escape and terminator bytes,
// 0xFF and a plain letter.
std::string RandomString(std::mt19937_64& rng) {
  static const char kAlphabet[] = {'\0', '\x01', '\x02', '\xfe', '\xff', 'a'};
  std::string s(rng() % 5, '\0');
  for (char& c : s) c = kAlphabet[rng() % sizeof(kAlphabet)];
  return s;
}

uint64_t RandomU64(std::mt19937_64& rng) {
  static const uint64_t kEdges[] = {0, 1, 0xff, 0x100, 0xffffffffull, ~0ull - 1, ~0ull};
  return rng() % 2 == 0 ? kEdges[rng() % 7] : rng();
}

std::string Encode(const Tuple& t) {
  return KeyBuilder().Str(std::get<0>(t)).U64(std::get<1>(t)).Str(std::get<2>(t)).Release();
}

TEST(KeysTest, EncodedOrderIsTupleOrder) {
  std::mt19937_64 rng(20240611);
  std::vector<Tuple> tuples;
  for (int i = 0; i < 400; ++i) tuples.emplace_back(RandomString(rng), RandomU64(rng), RandomString(rng));
  // Every pair compares the same way as tuples and as encoded bytes (std::string compares
  // bytes as unsigned, like memcmp).
  for (const Tuple& a : tuples) {
    for (const Tuple& b : tuples) {
      ASSERT_EQ(a < b, Encode(a) < Encode(b))
          << absl::CEscape(std::get<0>(a)) << "," << std::get<1>(a) << " vs "
          << absl::CEscape(std::get<0>(b)) << "," << std::get<1>(b);
      ASSERT_EQ(a == b, Encode(a) == Encode(b));
    }
  }
  // And so sorting either way gives the same sequence.
  std::vector<Tuple> by_tuple = tuples;
  std::sort(by_tuple.begin(), by_tuple.end());
  std::vector<Tuple> by_key = tuples;
  std::sort(by_key.begin(), by_key.end(),
            [](const Tuple& a, const Tuple& b) { return Encode(a) < Encode(b); });
  EXPECT_EQ(by_tuple, by_key);
}

TEST(KeysTest, RoundTripsThroughKeyReader) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 500; ++i) {
    const std::string s = RandomString(rng);
    const uint64_t v = RandomU64(rng);
    const uint32_t w = static_cast<uint32_t>(rng());
    const std::string key = KeyBuilder().Str(s).U64(v).U32(w).Str("").Release();
    KeyReader reader(key);
    auto got_s = reader.Str();
    ASSERT_OK(got_s);
    EXPECT_EQ(*got_s, s);
    auto got_v = reader.U64();
    ASSERT_OK(got_v);
    EXPECT_EQ(*got_v, v);
    auto got_w = reader.U32();
    ASSERT_OK(got_w);
    EXPECT_EQ(*got_w, w);
    auto empty = reader.Str();
    ASSERT_OK(empty);
    EXPECT_EQ(*empty, "");
    EXPECT_TRUE(reader.done());
  }
}

TEST(KeysTest, CorruptKeysAreDataLoss) {
  using ::testing::HasSubstr;
  EXPECT_THAT(KeyReader("abc").Str(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("unterminated")));
  EXPECT_THAT(KeyReader(absl::string_view("a\0\x02", 3)).Str(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("escaped")));
  EXPECT_THAT(KeyReader("1234567").U64(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("64-bit")));
  EXPECT_THAT(KeyReader("123").U32(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("32-bit")));
}

TEST(KeysTest, PrefixSuccessorExamples) {
  EXPECT_EQ(PrefixSuccessor("abc"), "abd");
  EXPECT_EQ(PrefixSuccessor(absl::string_view("a\xff\xff", 3)), "b");
  EXPECT_EQ(PrefixSuccessor(absl::string_view("\xff\xff", 2)), "");
  EXPECT_EQ(PrefixSuccessor(""), "");
  EXPECT_EQ(PrefixSuccessor(absl::string_view("a\0", 2)), std::string("a\x01", 2));
}

TEST(KeysTest, PrefixSuccessorBoundsExactlyTheKeysWithThePrefix) {
  std::mt19937_64 rng(99);
  for (int i = 0; i < 300; ++i) {
    const std::string prefix = KeyBuilder().Str(RandomString(rng)).key();
    const std::string successor = PrefixSuccessor(prefix);
    for (int j = 0; j < 50; ++j) {
      const std::string key = KeyBuilder().Str(RandomString(rng)).U64(RandomU64(rng)).Release();
      const bool has_prefix = key.compare(0, prefix.size(), prefix) == 0;
      const bool in_range = key >= prefix && (successor.empty() || key < successor);
      ASSERT_EQ(has_prefix, in_range) << absl::CEscape(prefix) << " / " << absl::CEscape(key);
    }
  }
}

}  // namespace
}  // namespace steadyeval
