// Variants and job kinds in the API's messages: each message that names one carries the
// text (`variant` / Job.kind, kept for old peers and old records) and the typed
// v1::VariantSpec beside it (`variant_spec` / Job.kind_spec). Senders set both
// (SetVariant, SetJobKind); receivers read the typed field when its kind is set and fall
// back to the text otherwise (VariantOf, JobKindOf). Pure functions.
#ifndef STEADYEVAL_API_VARIANT_PROTO_H_
#define STEADYEVAL_API_VARIANT_PROTO_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/variant.h"
#include "steadyeval/v1/types.pb.h"

namespace steadyeval {

v1::VariantSpec ToProto(const Variant& variant);
// INVALID_ARGUMENT for an unset or unknown kind, or a window CheckVariant refuses.
absl::StatusOr<Variant> FromProto(const v1::VariantSpec& spec);

// `spec` when its kind is set, else ParseVariant(text).
absl::StatusOr<Variant> ReadVariant(const v1::VariantSpec& spec, absl::string_view text);

// For the messages with `variant` and `variant_spec` fields (Score, StabilityRow,
// ExamplePoint, ExportedPrediction and the requests that filter by variant).
template <typename Message>
absl::StatusOr<Variant> VariantOf(const Message& m) {
  return ReadVariant(m.variant_spec(), m.variant());
}
// The name to show: ToString(VariantOf(m)), or the text as sent when that fails.
template <typename Message>
std::string VariantNameOf(const Message& m) {
  absl::StatusOr<Variant> v = VariantOf(m);
  return v.ok() ? ToString(*v) : m.variant();
}
template <typename Message>
void SetVariant(Message& m, const Variant& variant) {
  m.set_variant(ToString(variant));
  *m.mutable_variant_spec() = ToProto(variant);
}
// A message read from an old peer or an old record (text only): adds the typed field
// when the text parses. Leaves a message that has one, or whose text does not parse, as is.
template <typename Message>
void FillVariantSpec(Message& m) {
  if (m.variant_spec().kind() != v1::VARIANT_KIND_UNSPECIFIED) return;
  if (absl::StatusOr<Variant> v = ParseVariant(m.variant()); v.ok()) {
    *m.mutable_variant_spec() = ToProto(*v);
  }
}
// A request's variant filter from the user's text: the text as given (so a server before
// variant_spec sees it unchanged), and the typed field when the text names one variant.
template <typename Message>
void SetVariantFilter(Message& m, absl::string_view text) {
  m.set_variant(std::string(text));
  m.clear_variant_spec();
  if (absl::StatusOr<Variant> v = ParseVariant(text); v.ok()) {
    *m.mutable_variant_spec() = ToProto(*v);
  }
}

// A job's kind: kind_spec when its kind is set, else the text. INVALID_ARGUMENT for an
// ensemble, or text that is not raw / avg@n.
absl::StatusOr<JobKind> JobKindOf(const v1::Job& job);
// Whether JobKindOf(job) is raw.
bool IsRawJob(const v1::Job& job);
// JobKindOf(job), or the text as stored when that fails (for display and metric labels).
std::string JobKindNameOf(const v1::Job& job);
void SetJobKind(v1::Job& job, JobKind kind);
// As FillVariantSpec, for a job stored before kind_spec.
void FillJobKindSpec(v1::Job& job);

}  // namespace steadyeval

#endif  // STEADYEVAL_API_VARIANT_PROTO_H_
