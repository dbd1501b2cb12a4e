#include "api/variant_proto.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace steadyeval {
namespace {

constexpr std::pair<Variant::Kind, v1::VariantKind> kKinds[] = {
    {Variant::Kind::kRaw, v1::VARIANT_RAW},
    {Variant::Kind::kAverage, v1::VARIANT_AVERAGE},
    {Variant::Kind::kEnsemble, v1::VARIANT_ENSEMBLE},
    {Variant::Kind::kSoftEnsemble, v1::VARIANT_SOFT_ENSEMBLE},
};

}  // namespace

v1::VariantSpec ToProto(const Variant& variant) {
  v1::VariantSpec spec;
  for (const auto& [kind, proto] : kKinds) {
    if (kind == variant.kind) spec.set_kind(proto);
  }
  spec.set_window(variant.window);
  return spec;
}

absl::StatusOr<Variant> FromProto(const v1::VariantSpec& spec) {
  for (const auto& [kind, proto] : kKinds) {
    if (proto != spec.kind()) continue;
    const Variant variant{kind, spec.window()};
    RETURN_IF_ERROR(CheckVariant(variant));
    return variant;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("variant_spec kind ", static_cast<int>(spec.kind()),
                   " is not one of raw, average, ensemble, soft ensemble"));
}

absl::StatusOr<Variant> ReadVariant(const v1::VariantSpec& spec, absl::string_view text) {
  if (spec.kind() != v1::VARIANT_KIND_UNSPECIFIED) return FromProto(spec);
  return ParseVariant(text);
}

absl::StatusOr<JobKind> JobKindOf(const v1::Job& job) {
  if (job.kind_spec().kind() == v1::VARIANT_KIND_UNSPECIFIED) return ParseJobKind(job.kind());
  ASSIGN_OR_RETURN(const Variant variant, FromProto(job.kind_spec()));
  return JobKindOf(variant);
}

bool IsRawJob(const v1::Job& job) {
  absl::StatusOr<JobKind> kind = JobKindOf(job);
  return kind.ok() && kind->is_raw();
}

std::string JobKindNameOf(const v1::Job& job) {
  absl::StatusOr<JobKind> kind = JobKindOf(job);
  return kind.ok() ? ToString(*kind) : job.kind();
}

void SetJobKind(v1::Job& job, JobKind kind) {
  job.set_kind(ToString(kind));
  *job.mutable_kind_spec() = ToProto(kind.variant());
}

void FillJobKindSpec(v1::Job& job) {
  if (job.kind_spec().kind() != v1::VARIANT_KIND_UNSPECIFIED) return;
  if (absl::StatusOr<JobKind> kind = ParseJobKind(job.kind()); kind.ok()) {
    *job.mutable_kind_spec() = ToProto(kind->variant());
  }
}

}  // namespace steadyeval
