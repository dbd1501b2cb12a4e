#include "api/variant_proto.h"

#include "testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "steadyeval/v1/eval_service.pb.h"

namespace steadyeval {
namespace {

using ::testing::HasSubstr;
using ::steadyeval::testing::StatusIs;

TEST(VariantProtoTest, RoundTripsEveryKind) {
  for (const Variant& v : {Variant::Raw(), Variant::Average(2), Variant::Ensemble(7),
                           Variant::SoftEnsemble(1000)}) {
    absl::StatusOr<Variant> back = FromProto(ToProto(v));
    ASSERT_OK(back) << ToString(v);
    EXPECT_EQ(*back, v);
  }
  EXPECT_EQ(ToProto(Variant::Average(3)).kind(), v1::VARIANT_AVERAGE);
  EXPECT_EQ(ToProto(Variant::Average(3)).window(), 3u);
}

TEST(VariantProtoTest, RefusesSpecsTheParserWouldRefuse) {
  v1::VariantSpec spec;  // kind unset
  EXPECT_THAT(FromProto(spec), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  spec.set_kind(v1::VARIANT_AVERAGE);
  spec.set_window(1);
  EXPECT_THAT(FromProto(spec), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("avg@1")));
  spec.set_kind(static_cast<v1::VariantKind>(42));  // a kind from a newer peer
  spec.set_window(2);
  EXPECT_THAT(FromProto(spec), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("42")));
}

TEST(VariantProtoTest, ReadersPreferTheTypedFieldAndFallBackToTheText) {
  v1::Score score;
  score.set_variant("avg@2");  // an old record: text only
  ASSERT_OK(VariantOf(score));
  EXPECT_EQ(*VariantOf(score), Variant::Average(2));

  *score.mutable_variant_spec() = ToProto(Variant::Ensemble(3));  // typed wins
  EXPECT_EQ(*VariantOf(score), Variant::Ensemble(3));
  EXPECT_EQ(VariantNameOf(score), "ens@3");

  v1::Score odd;
  odd.set_variant("avg@02");  // neither field reads: shown as sent
  EXPECT_THAT(VariantOf(odd), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_EQ(VariantNameOf(odd), "avg@02");
}

TEST(VariantProtoTest, SendersSetBothFieldsAlike) {
  v1::StabilityRow row;
  SetVariant(row, Variant::SoftEnsemble(4));
  EXPECT_EQ(row.variant(), "ens-soft@4");
  EXPECT_EQ(row.variant_spec().kind(), v1::VARIANT_SOFT_ENSEMBLE);
  EXPECT_EQ(row.variant_spec().window(), 4u);

  v1::Job job;
  SetJobKind(job, JobKind::Average(5));
  EXPECT_EQ(job.kind(), "avg@5");
  EXPECT_EQ(job.kind_spec().kind(), v1::VARIANT_AVERAGE);
  ASSERT_OK(JobKindOf(job));
  EXPECT_EQ(*JobKindOf(job), JobKind::Average(5));
}

TEST(VariantProtoTest, FillAddsTheTypedFieldToOldMessagesOnly) {
  v1::Score old;
  old.set_variant("ens-soft@2");
  FillVariantSpec(old);
  EXPECT_EQ(old.variant_spec().kind(), v1::VARIANT_SOFT_ENSEMBLE);
  EXPECT_EQ(old.variant_spec().window(), 2u);

  v1::Score unreadable;
  unreadable.set_variant("med@2");
  FillVariantSpec(unreadable);
  EXPECT_FALSE(unreadable.has_variant_spec());

  v1::Job job;
  job.set_kind("avg@3");
  FillJobKindSpec(job);
  EXPECT_EQ(job.kind_spec().kind(), v1::VARIANT_AVERAGE);
  EXPECT_EQ(job.kind_spec().window(), 3u);
}

TEST(VariantProtoTest, JobKindsAreRawOrAverage) {
  v1::Job job;
  job.set_kind("raw");
  EXPECT_TRUE(JobKindOf(job)->is_raw());
  job.set_kind("ens@2");
  EXPECT_THAT(JobKindOf(job), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_EQ(JobKindNameOf(job), "ens@2");
  *job.mutable_kind_spec() = ToProto(Variant::Ensemble(2));
  EXPECT_THAT(JobKindOf(job), StatusIs(absl::StatusCode::kInvalidArgument,
                                       HasSubstr("not raw or avg@n")));
  *job.mutable_kind_spec() = ToProto(Variant::Average(2));
  job.set_kind("");  // typed only (a newer peer that stopped filling the text)
  EXPECT_EQ(*JobKindOf(job), JobKind::Average(2));
  EXPECT_EQ(JobKindNameOf(job), "avg@2");
}

TEST(VariantProtoTest, AFilterIsTypedOnlyWhenItNamesOneVariant) {
  v1::GetScoresRequest all;
  SetVariantFilter(all, "all");
  EXPECT_EQ(all.variant(), "all");
  EXPECT_FALSE(all.has_variant_spec());
  v1::ExportPredictionsRequest one;
  SetVariantFilter(one, "avg@2");
  EXPECT_EQ(one.variant(), "avg@2");
  EXPECT_EQ(*VariantOf(one), Variant::Average(2));
}

}  // namespace
}  // namespace steadyeval
