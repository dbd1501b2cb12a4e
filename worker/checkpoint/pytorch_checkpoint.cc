#include "worker/checkpoint/pytorch_checkpoint.h"

#include <caffe2/serialize/inline_container.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <set>
#include <unordered_map>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status.h"

namespace steadyeval {
namespace {

// ---- The values a state-dict pickle builds ---------------------------------------------

// A storage named by a persistent id; its bytes are loaded only when a tensor needs them.
struct StorageRef {
  std::string type_name;  // "torch.FloatStorage"
  std::string key;        // record "data/<key>"
  int64_t numel = 0;
};

struct TensorRef {
  std::shared_ptr<StorageRef> storage;
  int64_t offset = 0;
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;
};

struct Value;
using ValuePtr = std::shared_ptr<Value>;

struct Value {
  enum class Kind { kNone, kBool, kInt, kFloat, kString, kBytes, kTuple, kList, kDict,
                    kGlobal, kStorage, kTensor, kObject };
  explicit Value(Kind k) : kind(k) {}

  Kind kind;
  int64_t integer = 0;  // kBool, kInt
  double real = 0;      // kFloat
  std::string text;     // kString, kBytes; kGlobal and kObject: "module.name"
  std::vector<ValuePtr> items;                         // kTuple, kList
  std::vector<std::pair<ValuePtr, ValuePtr>> entries;  // kDict, in insertion order
  std::shared_ptr<StorageRef> storage;                 // kStorage
  std::shared_ptr<TensorRef> tensor;                   // kTensor
};

ValuePtr Make(Value::Kind kind) { return std::make_shared<Value>(kind); }

std::string Describe(const Value& v) {
  switch (v.kind) {
    case Value::Kind::kNone: return "None";
    case Value::Kind::kBool: return "a bool";
    case Value::Kind::kInt: return "an int";
    case Value::Kind::kFloat: return "a float";
    case Value::Kind::kString: return "a str";
    case Value::Kind::kBytes: return "bytes";
    case Value::Kind::kTuple: return "a tuple";
    case Value::Kind::kList: return "a list";
    case Value::Kind::kDict: return "a dict";
    case Value::Kind::kGlobal: return absl::StrCat("a reference to ", v.text);
    case Value::Kind::kStorage: return "a bare storage";
    case Value::Kind::kTensor: return "a tensor";
    case Value::Kind::kObject: return absl::StrCat("a ", v.text, " object");
  }
  return "?";
}

// ---- The pickle interpreter -------------------------------------------------------------

// Runs the pickle program of data.pkl over the opcodes a torch.save'd state dict uses
// (protocols 2-4). Nothing named by a GLOBAL is ever called: the known tensor rebuild
// functions and collections.OrderedDict are interpreted, everything else yields an opaque
// kObject.
class StateDictUnpickler {
 public:
  StateDictUnpickler(absl::string_view program, std::string where)
      : program_(program), where_(std::move(where)) {}

  absl::StatusOr<ValuePtr> Run();

 private:
  absl::Status Corrupt(absl::string_view what) const {
    return absl::DataLossError(absl::StrCat(where_, ": ", what, " at byte ", opcode_pos_,
                                            " of data.pkl (corrupt file?)"));
  }
  bool Take(size_t n, absl::string_view* out) {
    if (program_.size() - pos_ < n) return false;
    *out = program_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  // Little-endian unsigned integer of `n` <= 8 bytes.
  bool TakeUnsigned(size_t n, uint64_t* out) {
    absl::string_view bytes;
    if (!Take(n, &bytes)) return false;
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;) v = (v << 8) | static_cast<uint8_t>(bytes[i]);
    *out = v;
    return true;
  }
  bool TakeLine(std::string* out) {
    const size_t end = program_.find('\n', pos_);
    if (end == absl::string_view::npos) return false;
    *out = std::string(program_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return true;
  }
  absl::StatusOr<ValuePtr> Pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) {
      return Corrupt("pickle stack underflow");
    }
    ValuePtr v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  // The values pushed since the last MARK, which is removed.
  absl::StatusOr<std::vector<ValuePtr>> PopToMark() {
    if (marks_.empty()) return Corrupt("pickle has no MARK to pop to");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<ValuePtr> items(std::make_move_iterator(stack_.begin() + mark),
                                std::make_move_iterator(stack_.end()));
    stack_.resize(mark);
    return items;
  }
  absl::StatusOr<ValuePtr> Top(Value::Kind kind, absl::string_view op) {
    if (stack_.empty() || stack_.back()->kind != kind) {
      return Corrupt(absl::StrCat(op, " applied to the wrong kind of value"));
    }
    return stack_.back();
  }
  absl::Status PushString(size_t length_bytes, Value::Kind kind) {
    uint64_t n = 0;
    absl::string_view bytes;
    if (!TakeUnsigned(length_bytes, &n) || n > program_.size() || !Take(n, &bytes)) {
      return Corrupt("truncated string");
    }
    ValuePtr v = Make(kind);
    v->text = std::string(bytes);
    stack_.push_back(std::move(v));
    return absl::OkStatus();
  }
  void PushInt(int64_t i) {
    ValuePtr v = Make(Value::Kind::kInt);
    v->integer = i;
    stack_.push_back(std::move(v));
  }
  absl::Status Memoize(uint64_t index) {
    if (stack_.empty()) return Corrupt("memo store from an empty stack");
    memo_[index] = stack_.back();
    return absl::OkStatus();
  }
  absl::Status Recall(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) {
      return Corrupt(absl::StrCat("memo entry ", index, " read before written"));
    }
    stack_.push_back(it->second);
    return absl::OkStatus();
  }
  absl::Status Step(uint8_t op, bool* done);
  absl::StatusOr<ValuePtr> Call(const Value& callable, const Value& args, int depth = 0);
  absl::StatusOr<ValuePtr> PersistentLoad(const Value& pid);

  absl::string_view program_;
  std::string where_;
  size_t pos_ = 0;
  size_t opcode_pos_ = 0;
  std::vector<ValuePtr> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, ValuePtr> memo_;
  std::map<std::string, std::shared_ptr<StorageRef>> storages_;
};

absl::StatusOr<ValuePtr> StateDictUnpickler::Run() {
  bool done = false;
  while (!done) {
    opcode_pos_ = pos_;
    absl::string_view op;
    if (!Take(1, &op)) return Corrupt("pickle ends without STOP (truncated)");
    RETURN_IF_ERROR(Step(static_cast<uint8_t>(op[0]), &done));
  }
  if (stack_.size() != 1) return Corrupt("pickle does not leave exactly one value");
  return stack_.back();
}

absl::Status StateDictUnpickler::Step(uint8_t op, bool* done) {
  using Kind = Value::Kind;
  uint64_t n = 0;
  absl::string_view bytes;
  switch (op) {
    case 0x80:  // PROTO
      if (!Take(1, &bytes)) return Corrupt("truncated PROTO");
      return absl::OkStatus();
    case 0x95:  // FRAME: a length hint only
      if (!Take(8, &bytes)) return Corrupt("truncated FRAME");
      return absl::OkStatus();
    case '.':  // STOP
      *done = true;
      return absl::OkStatus();
    case '(':  // MARK
      marks_.push_back(stack_.size());
      return absl::OkStatus();
    case '0':  // POP
      return Pop().status();
    case '1':  // POP_MARK
      return PopToMark().status();
    case '2':  // DUP
      if (stack_.empty()) return Corrupt("DUP of an empty stack");
      stack_.push_back(stack_.back());
      return absl::OkStatus();
    case 'N':
      stack_.push_back(Make(Kind::kNone));
      return absl::OkStatus();
    case 0x88:  // NEWTRUE
    case 0x89: {  // NEWFALSE
      ValuePtr v = Make(Kind::kBool);
      v->integer = op == 0x88;
      stack_.push_back(std::move(v));
      return absl::OkStatus();
    }
    case 'J':  // BININT: signed 32-bit
      if (!TakeUnsigned(4, &n)) return Corrupt("truncated BININT");
      PushInt(static_cast<int32_t>(static_cast<uint32_t>(n)));
      return absl::OkStatus();
    case 'K':  // BININT1
      if (!TakeUnsigned(1, &n)) return Corrupt("truncated BININT1");
      PushInt(static_cast<int64_t>(n));
      return absl::OkStatus();
    case 'M':  // BININT2
      if (!TakeUnsigned(2, &n)) return Corrupt("truncated BININT2");
      PushInt(static_cast<int64_t>(n));
      return absl::OkStatus();
    case 0x8a:    // LONG1: n-byte two's complement
    case 0x8b: {  // LONG4
      uint64_t width = 0;
      if (!TakeUnsigned(op == 0x8a ? 1 : 4, &width)) return Corrupt("truncated LONG");
      if (width > 8) return Corrupt("integer wider than 64 bits");
      if (!TakeUnsigned(width, &n)) return Corrupt("truncated LONG");
      if (width > 0 && width < 8 && (n >> (8 * width - 1)) & 1) n |= ~0ull << (8 * width);
      PushInt(static_cast<int64_t>(n));
      return absl::OkStatus();
    }
    case 'G': {  // BINFLOAT: big-endian double
      if (!Take(8, &bytes)) return Corrupt("truncated BINFLOAT");
      uint64_t bits = 0;
      for (char c : bytes) bits = (bits << 8) | static_cast<uint8_t>(c);
      ValuePtr v = Make(Kind::kFloat);
      std::memcpy(&v->real, &bits, sizeof(bits));
      stack_.push_back(std::move(v));
      return absl::OkStatus();
    }
    case 'X': return PushString(4, Kind::kString);     // BINUNICODE
    case 0x8c: return PushString(1, Kind::kString);    // SHORT_BINUNICODE
    case 0x8d: return PushString(8, Kind::kString);    // BINUNICODE8
    case 'T': return PushString(4, Kind::kString);     // BINSTRING (Python 2 str)
    case 'U': return PushString(1, Kind::kString);     // SHORT_BINSTRING
    case 'B': return PushString(4, Kind::kBytes);      // BINBYTES
    case 'C': return PushString(1, Kind::kBytes);      // SHORT_BINBYTES
    case 0x8e: return PushString(8, Kind::kBytes);     // BINBYTES8
    case ')':
      stack_.push_back(Make(Kind::kTuple));
      return absl::OkStatus();
    case 't': {  // TUPLE
      ASSIGN_OR_RETURN(std::vector<ValuePtr> items, PopToMark());
      ValuePtr v = Make(Kind::kTuple);
      v->items = std::move(items);
      stack_.push_back(std::move(v));
      return absl::OkStatus();
    }
    case 0x85:    // TUPLE1
    case 0x86:    // TUPLE2
    case 0x87: {  // TUPLE3
      const size_t count = op - 0x84;
      ValuePtr v = Make(Kind::kTuple);
      v->items.resize(count);
      for (size_t i = count; i-- > 0;) {
        ASSIGN_OR_RETURN(v->items[i], Pop());
      }
      stack_.push_back(std::move(v));
      return absl::OkStatus();
    }
    case ']':
      stack_.push_back(Make(Kind::kList));
      return absl::OkStatus();
    case 'l': {  // LIST
      ASSIGN_OR_RETURN(std::vector<ValuePtr> items, PopToMark());
      ValuePtr v = Make(Kind::kList);
      v->items = std::move(items);
      stack_.push_back(std::move(v));
      return absl::OkStatus();
    }
    case 'a': {  // APPEND
      ASSIGN_OR_RETURN(ValuePtr item, Pop());
      ASSIGN_OR_RETURN(ValuePtr list, Top(Kind::kList, "APPEND"));
      list->items.push_back(std::move(item));
      return absl::OkStatus();
    }
    case 'e': {  // APPENDS
      ASSIGN_OR_RETURN(std::vector<ValuePtr> items, PopToMark());
      ASSIGN_OR_RETURN(ValuePtr list, Top(Kind::kList, "APPENDS"));
      for (ValuePtr& item : items) list->items.push_back(std::move(item));
      return absl::OkStatus();
    }
    case '}':
      stack_.push_back(Make(Kind::kDict));
      return absl::OkStatus();
    case 'd':    // DICT
    case 'u': {  // SETITEMS
      ASSIGN_OR_RETURN(std::vector<ValuePtr> items, PopToMark());
      if (items.size() % 2 != 0) return Corrupt("odd number of dict keys and values");
      ValuePtr dict;
      if (op == 'd') {
        dict = Make(Kind::kDict);
      } else {
        ASSIGN_OR_RETURN(dict, Top(Kind::kDict, "SETITEMS"));
      }
      for (size_t i = 0; i < items.size(); i += 2) {
        dict->entries.emplace_back(std::move(items[i]), std::move(items[i + 1]));
      }
      if (op == 'd') stack_.push_back(std::move(dict));
      return absl::OkStatus();
    }
    case 's': {  // SETITEM
      ASSIGN_OR_RETURN(ValuePtr value, Pop());
      ASSIGN_OR_RETURN(ValuePtr key, Pop());
      ASSIGN_OR_RETURN(ValuePtr dict, Top(Kind::kDict, "SETITEM"));
      dict->entries.emplace_back(std::move(key), std::move(value));
      return absl::OkStatus();
    }
    case 'c': {  // GLOBAL "module\nname\n"
      std::string module, name;
      if (!TakeLine(&module) || !TakeLine(&name)) return Corrupt("truncated GLOBAL");
      ValuePtr v = Make(Kind::kGlobal);
      v->text = absl::StrCat(module, ".", name);
      stack_.push_back(std::move(v));
      return absl::OkStatus();
    }
    case 0x93: {  // STACK_GLOBAL
      ASSIGN_OR_RETURN(ValuePtr name, Pop());
      ASSIGN_OR_RETURN(ValuePtr module, Pop());
      if (name->kind != Kind::kString || module->kind != Kind::kString) {
        return Corrupt("STACK_GLOBAL of non-strings");
      }
      ValuePtr v = Make(Kind::kGlobal);
      v->text = absl::StrCat(module->text, ".", name->text);
      stack_.push_back(std::move(v));
      return absl::OkStatus();
    }
    case 'R':      // REDUCE: callable(*args)
    case 0x81: {   // NEWOBJ: cls.__new__(cls, *args)
      ASSIGN_OR_RETURN(ValuePtr args, Pop());
      ASSIGN_OR_RETURN(ValuePtr callable, Pop());
      if (args->kind != Kind::kTuple) return Corrupt("call arguments are not a tuple");
      ASSIGN_OR_RETURN(ValuePtr result, Call(*callable, *args));
      stack_.push_back(std::move(result));
      return absl::OkStatus();
    }
    case 'b':  // BUILD: obj.__setstate__(state). Only an OrderedDict's _metadata or a
               // Parameter's extra state reach here; neither matters for the weights.
      RETURN_IF_ERROR(Pop().status());
      if (stack_.empty()) return Corrupt("BUILD without an object");
      return absl::OkStatus();
    case 'Q': {  // BINPERSID
      ASSIGN_OR_RETURN(ValuePtr pid, Pop());
      ASSIGN_OR_RETURN(ValuePtr storage, PersistentLoad(*pid));
      stack_.push_back(std::move(storage));
      return absl::OkStatus();
    }
    case 'q':  // BINPUT
      if (!TakeUnsigned(1, &n)) return Corrupt("truncated BINPUT");
      return Memoize(n);
    case 'r':  // LONG_BINPUT
      if (!TakeUnsigned(4, &n)) return Corrupt("truncated LONG_BINPUT");
      return Memoize(n);
    case 0x94:  // MEMOIZE
      return Memoize(memo_.size());
    case 'h':  // BINGET
      if (!TakeUnsigned(1, &n)) return Corrupt("truncated BINGET");
      return Recall(n);
    case 'j':  // LONG_BINGET
      if (!TakeUnsigned(4, &n)) return Corrupt("truncated LONG_BINGET");
      return Recall(n);
    default:
      return Corrupt(absl::StrCat("pickle opcode 0x", absl::Hex(op),
                                  " is not one torch.save uses for a state dict"));
  }
}

absl::StatusOr<ValuePtr> StateDictUnpickler::PersistentLoad(const Value& pid) {
  // ('storage', torch.<Type>Storage, key, location, numel)
  const auto& f = pid.items;
  if (pid.kind != Value::Kind::kTuple || f.size() != 5 || f[0]->kind != Value::Kind::kString ||
      f[0]->text != "storage" || f[1]->kind != Value::Kind::kGlobal ||
      f[2]->kind != Value::Kind::kString || f[4]->kind != Value::Kind::kInt ||
      f[4]->integer < 0) {
    return Corrupt("persistent id is not ('storage', type, key, location, numel)");
  }
  std::shared_ptr<StorageRef>& ref = storages_[f[2]->text];
  if (ref == nullptr) {
    ref = std::make_shared<StorageRef>();
    ref->type_name = f[1]->text;
    ref->key = f[2]->text;
    ref->numel = f[4]->integer;
  } else if (ref->type_name != f[1]->text) {
    return absl::InvalidArgumentError(absl::StrCat(
        where_, ": storage ", ref->key, " is used both as ", ref->type_name, " and as ",
        f[1]->text, " (tensors of different dtypes sharing memory are not supported)"));
  }
  ValuePtr v = Make(Value::Kind::kStorage);
  v->storage = ref;
  return v;
}

absl::StatusOr<ValuePtr> StateDictUnpickler::Call(const Value& callable, const Value& args,
                                                  int depth) {
  using Kind = Value::Kind;
  if (callable.kind != Kind::kGlobal) {
    ValuePtr v = Make(Kind::kObject);
    v->text = "<result of calling " + Describe(callable) + ">";
    return v;
  }
  const std::string& name = callable.text;
  const auto& a = args.items;
  if (name == "collections.OrderedDict" && a.empty()) return Make(Kind::kDict);
  if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") {
    // (storage, storage_offset, size, stride, [requires_grad, backward_hooks, metadata])
    auto ints = [](const ValuePtr& t, std::vector<int64_t>* out) {
      if (t->kind != Kind::kTuple) return false;
      for (const ValuePtr& d : t->items) {
        if (d->kind != Kind::kInt) return false;
        out->push_back(d->integer);
      }
      return true;
    };
    auto tensor = std::make_shared<TensorRef>();
    if (a.size() < 4 || a[0]->kind != Kind::kStorage || a[1]->kind != Kind::kInt ||
        !ints(a[2], &tensor->sizes) || !ints(a[3], &tensor->strides)) {
      return Corrupt(absl::StrCat("malformed call to ", name));
    }
    tensor->storage = a[0]->storage;
    tensor->offset = a[1]->integer;
    ValuePtr v = Make(Kind::kTensor);
    v->tensor = std::move(tensor);
    return v;
  }
  if ((name == "torch._utils._rebuild_parameter" ||
       name == "torch._utils._rebuild_parameter_with_state") &&
      !a.empty() && a[0]->kind == Kind::kTensor) {
    return a[0];  // an nn.Parameter: its data
  }
  if (name == "torch._tensor._rebuild_from_type_v2" && depth == 0 && a.size() >= 3 &&
      a[2]->kind == Kind::kTuple) {
    // (rebuild function, tensor subclass, its arguments, state): rebuild the plain tensor.
    return Call(*a[0], *a[2], depth + 1);
  }
  ValuePtr v = Make(Kind::kObject);
  v->text = name;
  return v;
}

// ---- From references to tensors -------------------------------------------------------

struct StorageType {
  const char* name;
  at::ScalarType type;
};

constexpr StorageType kStorageTypes[] = {
    {"torch.FloatStorage", at::kFloat},  {"torch.HalfStorage", at::kHalf},
    {"torch.BFloat16Storage", at::kBFloat16}, {"torch.DoubleStorage", at::kDouble},
    {"torch.LongStorage", at::kLong},     {"torch.IntStorage", at::kInt},
    {"torch.ShortStorage", at::kShort},    {"torch.CharStorage", at::kChar},
    {"torch.ByteStorage", at::kByte},     {"torch.BoolStorage", at::kBool},
};

class TensorBuilder {
 public:
  TensorBuilder(caffe2::serialize::PyTorchStreamReader& archive, const std::string& path)
      : archive_(archive), path_(path) {}

  // May throw c10::Error (from the archive); the caller converts it.
  absl::StatusOr<at::Tensor> Build(const std::string& name, const TensorRef& ref) {
    const StorageRef& storage_ref = *ref.storage;
    const StorageType* type = nullptr;
    for (const StorageType& t : kStorageTypes) {
      if (storage_ref.type_name == t.name) type = &t;
    }
    if (type == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          path_, ": tensor '", name, "' is stored as ", storage_ref.type_name,
          ", a dtype steadyeval cannot read (float32/16, bfloat16, float64 and integer or "
          "bool tensors only); convert the checkpoint"));
    }
    auto bad = [&](absl::string_view what) {
      return absl::DataLossError(
          absl::StrCat(path_, ": tensor '", name, "': ", what, " (corrupt file?)"));
    };
    if (ref.sizes.size() != ref.strides.size()) return bad("size and stride ranks differ");
    if (ref.offset < 0) return bad("negative storage offset");
    // Largest element index the view touches; it must lie inside the storage.
    int64_t last = ref.offset;
    bool empty = false;
    for (size_t i = 0; i < ref.sizes.size(); ++i) {
      if (ref.sizes[i] < 0 || ref.strides[i] < 0) return bad("negative size or stride");
      if (ref.sizes[i] == 0) empty = true;
      int64_t reach = 0;
      if (ref.sizes[i] > 0 && (__builtin_mul_overflow(ref.sizes[i] - 1, ref.strides[i], &reach) ||
                               __builtin_add_overflow(last, reach, &last))) {
        return bad("size and stride overflow");
      }
    }
    if (!empty && last >= storage_ref.numel) {
      return bad(absl::StrCat("view reaches element ", last, " of a storage of ",
                              storage_ref.numel));
    }
    ASSIGN_OR_RETURN(c10::Storage storage, Load(name, storage_ref, type->type));
    at::Tensor t = at::empty({0}, at::TensorOptions().dtype(type->type));
    t.set_(storage, ref.offset, ref.sizes, ref.strides);
    return t;
  }

 private:
  absl::StatusOr<c10::Storage> Load(const std::string& name, const StorageRef& ref,
                                    at::ScalarType type) {
    auto it = loaded_.find(ref.key);
    if (it != loaded_.end()) return it->second;
    const std::string record = absl::StrCat("data/", ref.key);
    if (!archive_.hasRecord(record)) {
      return absl::DataLossError(absl::StrCat(path_, ": tensor '", name, "': storage record ",
                                              record, " is missing (truncated or corrupt file?)"));
    }
    auto [data, bytes] = archive_.getRecord(record);
    const uint64_t expected = static_cast<uint64_t>(ref.numel) * c10::elementSize(type);
    if (bytes != expected) {
      return absl::DataLossError(absl::StrCat(path_, ": tensor '", name, "': storage record ",
                                              record, " holds ", bytes, " bytes, expected ",
                                              expected, " (corrupt file?)"));
    }
    c10::Storage storage(c10::Storage::use_byte_size_t(), bytes, std::move(data),
                         /*allocator=*/nullptr, /*resizable=*/false);
    loaded_.emplace(ref.key, storage);
    return storage;
  }

  caffe2::serialize::PyTorchStreamReader& archive_;
  const std::string& path_;
  std::map<std::string, c10::Storage> loaded_;
};

// INVALID_ARGUMENT / DATA_LOSS unless `file` starts like a zip archive.
absl::Status CheckZipMagic(absl::string_view file, const std::string& path) {
  const absl::string_view magic = file.substr(0, 4);
  if (magic == absl::string_view("PK\x03\x04", 4)) return absl::OkStatus();
  if (!magic.empty() && static_cast<uint8_t>(magic[0]) == 0x80) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " is in the legacy torch.save format (PyTorch < 1.6 or "
              "_use_new_zipfile_serialization=False), which steadyeval does not read: re-save "
              "it with a current torch.save or convert it to safetensors"));
  }
  return absl::DataLossError(absl::StrCat(
      path, " is not a torch.save zip archive (",
      magic.size() < 4 ? "shorter than 4 bytes" : "bad magic",
      "; truncated, still being written, or not a PyTorch file?)"));
}

// The archive reader's view of a file read through a FileSystem (a mapping on the local
// one: records are copied straight from it into the tensors' storages).
class MappedFileAdapter : public caffe2::serialize::ReadAdapterInterface {
 public:
  explicit MappedFileAdapter(std::unique_ptr<MappedFile> file) : file_(std::move(file)) {}
  size_t size() const override { return file_->size(); }
  size_t read(uint64_t pos, void* buf, size_t n, const char* /*what*/) const override {
    if (pos >= file_->size()) return 0;
    n = static_cast<size_t>(std::min<uint64_t>(n, file_->size() - pos));
    std::memcpy(buf, file_->data() + pos, n);
    return n;
  }

 private:
  const std::unique_ptr<MappedFile> file_;
};

}  // namespace

absl::StatusOr<NamedTensorList> ReadPytorchStateDict(const std::string& path, FileSystem* fs) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, fs->Map(path));
  RETURN_IF_ERROR(CheckZipMagic(file->bytes(), path));
  // libtorch throws c10::Error for a damaged archive; this is where the file is read, so
  // every exception means the file (not the program) is at fault.
  try {
    caffe2::serialize::PyTorchStreamReader archive(
        std::make_shared<MappedFileAdapter>(std::move(file)));
    if (archive.hasRecord("byteorder")) {
      auto [order, size] = archive.getRecord("byteorder");
      const std::string text(static_cast<const char*>(order.get()), size);
      if (text != "little") {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": written on a '", text, "'-endian machine; not supported"));
      }
    }
    if (!archive.hasRecord("data.pkl")) {
      return absl::DataLossError(absl::StrCat(path, ": zip archive has no data.pkl record (not "
                                                    "written by torch.save?)"));
    }
    auto [program, program_size] = archive.getRecord("data.pkl");
    StateDictUnpickler unpickler(
        absl::string_view(static_cast<const char*>(program.get()), program_size), path);
    ASSIGN_OR_RETURN(ValuePtr root, unpickler.Run());
    if (root->kind != Value::Kind::kDict) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, " holds ", Describe(*root), ", not a state dict (name -> tensor)"));
    }
    NamedTensorList out;
    out.reserve(root->entries.size());
    std::set<std::string> seen;
    TensorBuilder builder(archive, path);
    for (const auto& [key, value] : root->entries) {
      if (key->kind != Value::Kind::kString) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": state dict has a key that is ", Describe(*key), ", not a str"));
      }
      if (value->kind != Value::Kind::kTensor) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": entry '", key->text, "' is ", Describe(*value),
            ", not a tensor: a pytorch_model.bin must hold a model state dict "
            "(torch.save(model.state_dict())), not e.g. a training checkpoint"));
      }
      if (!seen.insert(key->text).second) {
        return absl::DataLossError(
            absl::StrCat(path, ": tensor '", key->text, "' appears twice (corrupt file?)"));
      }
      ASSIGN_OR_RETURN(at::Tensor tensor, builder.Build(key->text, *value->tensor));
      out.emplace_back(key->text, std::move(tensor));
    }
    return out;
  } catch (const c10::Error& e) {
    return absl::DataLossError(absl::StrCat(path, ": not a readable torch.save archive "
                                                  "(truncated or corrupt?): ",
                                            e.what_without_backtrace()));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(path, ": out of memory while loading"));
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat(path, ": ", e.what()));
  }
}

}  // namespace steadyeval
