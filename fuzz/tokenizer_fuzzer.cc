// Hugging Face tokenizer.json loading (worker/tokenizer/bpe_tokenizer.h), then encoding and decoding
// a few fixed texts with whatever loaded. Input: the file's bytes.
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "worker/tokenizer/bpe_tokenizer.h"

using namespace steadyeval;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto tokenizer = BpeTokenizer::FromJson(fuzz::AsView(data, size), "fuzz/tokenizer.json");
  if (!tokenizer.ok()) return 0;
  const BpeTokenizer& t = **tokenizer;
  FUZZ_CHECK(t.vocab_size() >= 0);
  for (const char* text : {"", "Hello world", " 12,345 apples\n\n", "日本語のテキスト。",
                           "<|endoftext|>ab<s> </s>", "a\xcc\x81 \xef\xbd\xb1"}) {
    auto ids = t.Encode(text);
    if (!ids.ok()) continue;
    for (int64_t id : *ids) FUZZ_CHECK(id >= 0 && id < t.vocab_size());
    FUZZ_CHECK(t.Decode(*ids).ok());
  }
  for (int64_t id : {int64_t{-1}, int64_t{0}, t.vocab_size() - 1, t.vocab_size()}) {
    (void)t.IdToPiece(id);
    (void)t.IsSpecial(id);
  }
  (void)t.TokenToId("<|endoftext|>");
  return 0;
}
