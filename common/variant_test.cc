#include "common/variant.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/limits.h"
#include "testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace steadyeval {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::steadyeval::testing::StatusIs;

TEST(ParseVariantTest, AcceptsTheCanonicalSpellings) {
  const struct {
    const char* text;
    Variant want;
  } kAccepted[] = {
      {"raw", Variant::Raw()},
      {"avg@2", Variant::Average(2)},
      {"avg@10", Variant::Average(10)},
      {"ens@3", Variant::Ensemble(3)},
      {"ens-soft@3", Variant::SoftEnsemble(3)},
      {"ens-soft@1000", Variant::SoftEnsemble(kMaxWindowSize)},
  };
  for (const auto& [text, want] : kAccepted) {
    absl::StatusOr<Variant> got = ParseVariant(text);
    ASSERT_OK(got) << text;
    EXPECT_EQ(*got, want) << text;
  }
}

TEST(ParseVariantTest, RefusesEveryOtherSpellingNamingTheTextAndTheForms) {
  for (const char* text :
       {"", "all", "Raw", "RAW", "raw ", " raw", "avg", "avg@", "avg@0", "avg@1", "avg@02",
        "avg@002", "avg@+2", "avg@-2", "avg@ 2", "avg@2 ", "avg@2.0", "avg@0x2", "AVG@2",
        "avg2", "ens", "ens@1", "ens-soft@", "ens_soft@2", "ens-soft@01", "med@2", "avg@1001",
        "avg@4294967296", "avg@99999999999", "avg@2@3"}) {
    EXPECT_THAT(ParseVariant(text),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr(absl::StrCat("'", text, "'")),
                               HasSubstr("raw, avg@n, ens@n or ens-soft@n"),
                               HasSubstr("2..1000"))))
        << "'" << text << "'";
  }
}

TEST(ParseVariantTest, RoundTripsEveryVariant) {
  for (Variant::Kind kind : {Variant::Kind::kAverage, Variant::Kind::kEnsemble,
                             Variant::Kind::kSoftEnsemble}) {
    for (uint32_t n = 2; n <= kMaxWindowSize; ++n) {
      const Variant v{kind, n};
      absl::StatusOr<Variant> back = ParseVariant(ToString(v));
      ASSERT_OK(back) << ToString(v);
      ASSERT_EQ(*back, v);
    }
  }
  EXPECT_EQ(ToString(Variant::Raw()), "raw");
  EXPECT_EQ(ToString(Variant::Average(2)), "avg@2");
  EXPECT_EQ(ToString(Variant::Ensemble(12)), "ens@12");
  EXPECT_EQ(ToString(Variant::SoftEnsemble(3)), "ens-soft@3");
}

TEST(VariantTest, OrdersRawThenAveragesThenEnsemblesEachByWindow) {
  EXPECT_LT(Variant::Raw(), Variant::Average(2));
  EXPECT_LT(Variant::Average(2), Variant::Average(10));
  EXPECT_LT(Variant::Average(1000), Variant::Ensemble(2));
  EXPECT_LT(Variant::Ensemble(5), Variant::SoftEnsemble(2));
}

TEST(CheckVariantTest, RefusesWindowsAndKindsTheParserWouldNotProduce) {
  EXPECT_OK(CheckVariant(Variant::Raw()));
  EXPECT_OK(CheckVariant(Variant::Average(2)));
  EXPECT_THAT(CheckVariant(Variant::Average(1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("avg@1")));
  EXPECT_THAT(CheckVariant(Variant::Ensemble(kMaxWindowSize + 1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("ens@1001")));
  EXPECT_THAT(CheckVariant(Variant{Variant::Kind::kRaw, 3}),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(CheckVariant(Variant{static_cast<Variant::Kind>(9), 2}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("kind 9")));
}

TEST(ParseJobKindTest, AcceptsRawAndAveragesOnly) {
  ASSERT_OK(ParseJobKind("raw"));
  EXPECT_TRUE(ParseJobKind("raw")->is_raw());
  EXPECT_EQ(ParseJobKind("raw")->window(), 0u);
  ASSERT_OK(ParseJobKind("avg@3"));
  EXPECT_EQ(*ParseJobKind("avg@3"), JobKind::Average(3));
  EXPECT_EQ(ToString(JobKind::Average(3)), "avg@3");
  EXPECT_EQ(JobKind::Average(3).variant(), Variant::Average(3));
  for (const char* text : {"avg@1", "avg@02", "avg@", "ens@2", "ens-soft@2", "all", ""}) {
    EXPECT_THAT(ParseJobKind(text),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr(absl::StrCat("'", text, "'")), HasSubstr("raw or avg@n"))))
        << text;
  }
  EXPECT_LT(JobKind::Raw(), JobKind::Average(2));
  EXPECT_LT(JobKind::Average(2), JobKind::Average(3));
}

}  // namespace
}  // namespace steadyeval
