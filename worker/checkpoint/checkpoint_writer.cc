#include "worker/checkpoint/checkpoint_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace steadyeval {
namespace {

namespace fs = std::filesystem;

absl::Status ErrnoError(const std::string& what, int err) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(err)));
}

// A file written with plain POSIX calls so it can be fsync'ed before the rename.
class OutFile {
 public:
  static absl::StatusOr<OutFile> Create(const std::string& path) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoError(absl::StrCat("cannot create ", path), errno);
    return OutFile(path, fd);
  }
  OutFile(OutFile&& other) noexcept : path_(std::move(other.path_)), fd_(other.fd_) { other.fd_ = -1; }
  ~OutFile() {
    if (fd_ >= 0) ::close(fd_);
  }

  absl::Status Write(const void* data, size_t size) {
    const char* p = static_cast<const char*>(data);
    while (size > 0) {
      ssize_t n = ::write(fd_, p, size);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoError(absl::StrCat("writing ", path_), errno);
      p += n;
      size -= static_cast<size_t>(n);
    }
    return absl::OkStatus();
  }
  absl::Status SyncAndClose() {
    if (::fsync(fd_) != 0) return ErrnoError(absl::StrCat("fsync ", path_), errno);
    int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) return ErrnoError(absl::StrCat("closing ", path_), errno);
    return absl::OkStatus();
  }

 private:
  OutFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_;
};

absl::Status WriteText(const std::string& path, const std::string& text) {
  ASSIGN_OR_RETURN(OutFile f, OutFile::Create(path));
  RETURN_IF_ERROR(f.Write(text.data(), text.size()));
  return f.SyncAndClose();
}

absl::Status WriteShard(const TensorMap& tensors, const std::vector<std::string>& names,
                        const std::string& path) {
  std::vector<TensorInfo> infos;
  for (const std::string& name : names) {
    ASSIGN_OR_RETURN(TensorInfo info, tensors.Info(name));
    infos.push_back(std::move(info));
  }
  const std::string header = BuildSafetensorsHeader(infos, {{"format", "pt"}});
  ASSIGN_OR_RETURN(OutFile f, OutFile::Create(path));
  RETURN_IF_ERROR(f.Write(header.data(), header.size()));
  for (const std::string& name : names) {
    ASSIGN_OR_RETURN(at::Tensor t, tensors.Stored(name));
    RETURN_IF_ERROR(f.Write(t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size()));
  }
  return f.SyncAndClose();
}

absl::Status SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(absl::StrCat("opening ", dir), errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  return rc == 0 ? absl::OkStatus() : ErrnoError(absl::StrCat("fsync ", dir), err);
}

absl::Status WriteInto(const TensorMap& tensors, const std::string& dir, int shards,
                       const std::string& extra_files_dir) {
  RETURN_IF_ERROR(WriteText(dir + "/config.json", tensors.config_json()));
  for (const char* file : kCheckpointSideFiles) {
    const std::string from = absl::StrCat(extra_files_dir, "/", file);
    if (extra_files_dir.empty() || !fs::is_regular_file(from) || std::string(file) == "config.json") {
      continue;
    }
    std::ifstream in(from, std::ios::binary);
    std::ostringstream buf;
    buf << in.rdbuf();
    if (!in && !in.eof()) return absl::InternalError(absl::StrCat("reading ", from));
    RETURN_IF_ERROR(WriteText(absl::StrCat(dir, "/", file), buf.str()));
  }

  const std::vector<std::string> names = tensors.TensorNames();
  if (shards == 1) return WriteShard(tensors, names, dir + "/model.safetensors");

  // Consecutive tensors (in name order) per shard, about total/shards bytes each.
  uint64_t total = 0;
  std::vector<uint64_t> sizes;
  for (const std::string& name : names) {
    ASSIGN_OR_RETURN(TensorInfo info, tensors.Info(name));
    sizes.push_back(info.end - info.begin);
    total += sizes.back();
  }
  std::vector<std::vector<std::string>> groups(1);
  uint64_t in_group = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    const size_t groups_left = static_cast<size_t>(shards) - groups.size();
    const size_t tensors_left = names.size() - i;
    const bool full = in_group * static_cast<uint64_t>(shards) >= total;
    if (!groups.back().empty() && groups_left > 0 && (full || tensors_left <= groups_left)) {
      groups.emplace_back();
      in_group = 0;
    }
    groups.back().push_back(names[i]);
    in_group += sizes[i];
  }
  nlohmann::ordered_json index;
  index["metadata"] = {{"total_size", total}};
  index["weight_map"] = nlohmann::ordered_json::object();
  for (size_t g = 0; g < groups.size(); ++g) {
    const std::string file =
        absl::StrFormat("model-%05d-of-%05d.safetensors", g + 1, groups.size());
    RETURN_IF_ERROR(WriteShard(tensors, groups[g], absl::StrCat(dir, "/", file)));
    for (const std::string& name : groups[g]) index["weight_map"][name] = file;
  }
  return WriteText(dir + "/model.safetensors.index.json", index.dump(2));
}

}  // namespace

absl::Status WriteCheckpoint(const TensorMap& tensors, const std::string& out_dir, int shards,
                             const std::string& extra_files_dir) {
  std::string out = out_dir;
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  const size_t count = tensors.TensorNames().size();
  if (shards < 1 || static_cast<size_t>(shards) > count) {
    return absl::InvalidArgumentError(absl::StrCat("--shards must be between 1 and the number of tensors (",
                                                   count, "), got ", shards));
  }
  std::error_code ec;
  if (fs::exists(out, ec)) {
    return absl::AlreadyExistsError(absl::StrCat(out, " already exists; choose a new output folder"));
  }
  const std::string tmp = absl::StrCat(out, ".tmp-", ::getpid());
  fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec)) {
    return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", ec.message()));
  }
  absl::Status s = WriteInto(tensors, tmp, shards, extra_files_dir);
  if (s.ok()) s = SyncDir(tmp);
  if (s.ok() && ::rename(tmp.c_str(), out.c_str()) != 0) {
    s = ErrnoError(absl::StrCat("renaming ", tmp, " to ", out), errno);
  }
  if (!s.ok()) {
    fs::remove_all(tmp, ec);
    return s;
  }
  const std::string parent = fs::path(out).parent_path().string();
  return SyncDir(parent.empty() ? "." : parent);
}

}  // namespace steadyeval
