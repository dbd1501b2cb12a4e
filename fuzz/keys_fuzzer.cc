// RocksDB key decoding (common/keys.h): a stored key read back with every component
// sequence the store's scans use (server/store/store.cc), plus the encoder round trip.
//
// Input: one byte choosing the sequence, then the key's bytes.
#include <cstdint>
#include <string>
#include <vector>

#include "common/keys.h"
#include "fuzz/fuzz_util.h"

using namespace steadyeval;

namespace {

enum Component { kStr, kU64, kU32 };

// The key layouts of store.h: run; run|step; id; run|task|variant|step|example;
// run|task|variant|step; task|variant|step|example (a prediction after its run prefix);
// task|variant (a pair after its run prefix); example alone.
const std::vector<std::vector<Component>> kLayouts = {
    {kStr},
    {kStr, kU64},
    {kU64},
    {kStr, kStr, kStr, kU64, kU32},
    {kStr, kStr, kStr, kU64},
    {kStr, kStr, kU64, kU32},
    {kStr, kStr},
    {kU32},
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view in = fuzz::AsView(data, size);
  const uint8_t selector = static_cast<uint8_t>(fuzz::TakeLE(in, 1));
  const std::vector<Component>& layout = kLayouts[selector % kLayouts.size()];

  // Decode; on success, re-encoding what was read must give back the bytes consumed.
  KeyReader reader(in);
  KeyBuilder builder;
  bool ok = true;
  for (Component c : layout) {
    if (c == kStr) {
      auto s = reader.Str();
      if (!(ok = s.ok())) break;
      builder.Str(*s);
    } else if (c == kU64) {
      auto v = reader.U64();
      if (!(ok = v.ok())) break;
      builder.U64(*v);
    } else {
      auto v = reader.U32();
      if (!(ok = v.ok())) break;
      builder.U32(*v);
    }
  }
  if (ok) {
    FUZZ_CHECK(builder.key().size() + reader.rest().size() == in.size());
    FUZZ_CHECK(in.substr(0, builder.key().size()) == builder.key());
    FUZZ_CHECK(reader.done() == reader.rest().empty());
  }

  // Encoding the input as one string component reads back as itself; every key that starts
  // with the input sorts below the input's PrefixSuccessor (the scans' upper bound).
  const std::string key = KeyBuilder().Str(in).U64(size).Release();
  KeyReader back(key);
  auto s = back.Str();
  FUZZ_CHECK(s.ok() && *s == in);
  auto n = back.U64();
  FUZZ_CHECK(n.ok() && *n == size && back.done());
  const std::string successor = PrefixSuccessor(in);
  if (!successor.empty()) {
    const std::string extended = std::string(in) + "\xff\xff\xff";
    FUZZ_CHECK(absl::string_view(successor) > in);
    FUZZ_CHECK(absl::string_view(extended) < successor);
  } else {
    for (char c : in) FUZZ_CHECK(static_cast<uint8_t>(c) == 0xff);
  }
  return 0;
}
