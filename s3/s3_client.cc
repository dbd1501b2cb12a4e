#include "s3/s3_client.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "common/sha256.h"
#include "common/status.h"
#include "s3/s3_endpoint.h"
#include "s3/s3_uri.h"
#include "s3/sigv4.h"

namespace steadyeval {

// One S3 operation, as Execute sends it (each attempt signs it afresh).
struct S3Client::Request {
  const char* op = "";        // for the observer: "list", "head", …
  const char* s3_op = "";     // for messages: "ListObjectsV2", "HeadObject", …
  const char* method = "GET";
  std::string bucket;
  std::string key;            // "" for a bucket-level request
  std::string shown_key;      // the key or prefix messages name (s3://bucket/shown_key)
  std::vector<std::pair<std::string, std::string>> query;  // not encoded
  std::string range;          // a Range header value, or ""
  const std::string* upload = nullptr;  // PUT body
  int file_fd = -1;           // a successful response body goes here (truncated per attempt)
  bool accept_416 = false;    // "range not satisfiable" is an answer, not an error
  bool accept_409 = false;    // "conflict" is an answer (CreateBucket of an existing bucket)

  // A request on the object `key` of `bucket` (messages name s3://bucket/key).
  static Request OnObject(const char* op, const char* s3_op, const char* method,
                          const std::string& bucket, const std::string& key) {
    Request request;
    request.op = op;
    request.s3_op = s3_op;
    request.method = method;
    request.bucket = bucket;
    request.key = key;
    request.shown_key = key;
    return request;
  }
};

struct S3Client::Response {
  long http_status = 0;
  CURLcode curl_code = CURLE_OK;
  std::string curl_error;
  std::map<std::string, std::string> headers;  // lowercased names, last response only
  std::string body;                            // in memory (errors too when file_fd >= 0)
  uint64_t bytes_to_file = 0;
  int write_errno = 0;                         // a failed write to file_fd
  S3ErrorKind kind = S3ErrorKind::kNone;
  int attempts = 0;
};

namespace {

constexpr size_t kMaxErrorBody = 64 * 1024;
const char kEmptySha256[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

void InitLibrariesOnce() {
  // Both must run once before any thread uses the libraries; a function-local static is
  // initialised exactly once, thread-safely.
  static const bool initialised = [] {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    xmlInitParser();
    return true;
  }();
  (void)initialised;
}

struct CurlDeleter {
  void operator()(CURL* handle) const { curl_easy_cleanup(handle); }
};
// This thread's curl handle, lent for one request. The handle lives until the thread exits,
// so its connection cache (open TCP and TLS connections) serves the thread's next request;
// it is reset to its defaults when the request ends, dropping every pointer into it.
class ThreadCurlHandle {
 public:
  ThreadCurlHandle() {
    if (handle_ == nullptr) handle_.reset(curl_easy_init());  // null again after a failure
  }
  ~ThreadCurlHandle() {
    if (handle_ != nullptr) curl_easy_reset(handle_.get());
  }
  ThreadCurlHandle(const ThreadCurlHandle&) = delete;
  ThreadCurlHandle& operator=(const ThreadCurlHandle&) = delete;

  CURL* get() const { return handle_.get(); }

 private:
  static thread_local std::unique_ptr<CURL, CurlDeleter> handle_;
};
thread_local std::unique_ptr<CURL, CurlDeleter> ThreadCurlHandle::handle_;

struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
struct XmlDocDeleter {
  void operator()(xmlDoc* doc) const { xmlFreeDoc(doc); }
};
using XmlDoc = std::unique_ptr<xmlDoc, XmlDocDeleter>;

XmlDoc ParseXml(const std::string& text) {
  if (text.empty()) return nullptr;
  return XmlDoc(xmlReadMemory(text.data(), static_cast<int>(text.size()), "s3-response.xml",
                              nullptr, XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING));
}

bool IsElement(const xmlNode* node, const char* name) {
  return node->type == XML_ELEMENT_NODE &&
         std::strcmp(reinterpret_cast<const char*>(node->name), name) == 0;
}

std::string Text(const xmlNode* node) {
  xmlChar* content = xmlNodeGetContent(node);
  if (content == nullptr) return "";
  std::string text(reinterpret_cast<const char*>(content));
  xmlFree(content);
  return text;
}

// The text of `parent`'s first child element `name`, or "".
std::string ChildText(const xmlNode* parent, const char* name) {
  for (const xmlNode* child = parent->children; child != nullptr; child = child->next) {
    if (IsElement(child, name)) return Text(child);
  }
  return "";
}

std::string StripQuotes(std::string etag) {
  absl::string_view view = etag;
  if (view.size() >= 2 && view.front() == '"' && view.back() == '"') {
    return std::string(view.substr(1, view.size() - 2));
  }
  return etag;
}

// Printable ASCII of `text`, at most `max` characters (for a body that is not S3's XML).
std::string Snippet(absl::string_view text, size_t max = 200) {
  std::string out;
  for (char c : text.substr(0, max)) out.push_back(absl::ascii_isprint(c) ? c : ' ');
  if (text.size() > max) out += "…";
  return std::string(absl::StripAsciiWhitespace(out));
}

// "HTTP 403 AccessDenied (Access Denied)" from a status and an S3 error body.
std::string DescribeHttpError(long status, const std::string& body) {
  std::string out = absl::StrCat("HTTP ", status);
  if (XmlDoc doc = ParseXml(body)) {
    const xmlNode* root = xmlDocGetRootElement(doc.get());
    if (root != nullptr && IsElement(root, "Error")) {
      const std::string code = ChildText(root, "Code");
      const std::string message = ChildText(root, "Message");
      if (!code.empty()) absl::StrAppend(&out, " ", code);
      if (!message.empty()) absl::StrAppend(&out, " (", Snippet(message, 300), ")");
      return out;
    }
  }
  if (!body.empty()) absl::StrAppend(&out, " (", Snippet(body), ")");
  return out;
}

std::string S3ErrorCode(const std::string& body) {
  if (XmlDoc doc = ParseXml(body)) {
    const xmlNode* root = xmlDocGetRootElement(doc.get());
    if (root != nullptr && IsElement(root, "Error")) return ChildText(root, "Code");
  }
  return "";
}

S3ErrorKind ClassifyHttp(long status, const std::string& body) {
  if (status >= 200 && status < 300) return S3ErrorKind::kNone;
  if (status == 404) return S3ErrorKind::kNotFound;
  if (status == 401 || status == 403) return S3ErrorKind::kAccessDenied;
  if (status == 429) return S3ErrorKind::kThrottled;
  if (status >= 500) {
    const std::string code = S3ErrorCode(body);
    if (code == "SlowDown" || code == "Throttling" || code == "ThrottlingException" ||
        code == "RequestLimitExceeded") {
      return S3ErrorKind::kThrottled;
    }
    return S3ErrorKind::kServerError;
  }
  return S3ErrorKind::kClientError;
}

bool Retryable(S3ErrorKind kind) {
  return kind == S3ErrorKind::kNetwork || kind == S3ErrorKind::kTimeout ||
         kind == S3ErrorKind::kThrottled || kind == S3ErrorKind::kServerError;
}

// Exponential backoff with "equal jitter": half the delay fixed, half random.
int64_t BackoffNanos(const S3ClientOptions& options, int retry) {
  int64_t delay_ms = std::max<int64_t>(options.initial_backoff_ms, 0);
  for (int i = 1; i < retry && delay_ms < options.max_backoff_ms; ++i) delay_ms *= 2;
  delay_ms = std::min(delay_ms, options.max_backoff_ms);
  thread_local std::mt19937_64 random{std::random_device{}()};
  std::uniform_int_distribution<int64_t> jitter(0, delay_ms / 2);
  return (delay_ms - delay_ms / 2 + jitter(random)) * 1'000'000;
}

std::string AmzDate(const Clock& clock) {
  return absl::FormatTime("%Y%m%dT%H%M%SZ", absl::FromUnixMillis(clock.UnixMillis()),
                          absl::UTCTimeZone());
}

// S3's LastModified ("2024-05-01T12:00:00.000Z"), to whole seconds so that listings and
// HEAD (whose Last-Modified header has seconds only) report the same mtime.
int64_t ParseIsoTimeNanos(const std::string& text) {
  absl::Time time;
  std::string error;
  if (!absl::ParseTime(absl::RFC3339_full, text, &time, &error)) return 0;
  return absl::ToUnixSeconds(time) * 1'000'000'000;
}

int64_t ParseHttpDateNanos(const std::string& text) {
  const time_t seconds = curl_getdate(text.c_str(), nullptr);
  return seconds < 0 ? 0 : static_cast<int64_t>(seconds) * 1'000'000'000;
}

// Where a response body goes: a successful one to `file_fd` when there is one, anything
// else to `body`.
struct WriteContext {
  CURL* handle;
  int file_fd;
  std::string* body;
  uint64_t* bytes_to_file;
  int* write_errno;
};

size_t OnBody(char* data, size_t size, size_t count, void* user) {
  auto* context = static_cast<WriteContext*>(user);
  const size_t bytes = size * count;
  long status = 0;
  curl_easy_getinfo(context->handle, CURLINFO_RESPONSE_CODE, &status);
  if (context->file_fd < 0 || status < 200 || status >= 300) {
    std::string& body = *context->body;
    if (context->file_fd >= 0 && body.size() >= kMaxErrorBody) return bytes;  // drop the rest
    body.append(data, bytes);
    return bytes;
  }
  size_t written = 0;
  while (written < bytes) {
    const ssize_t n = ::write(context->file_fd, data + written, bytes - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      *context->write_errno = n < 0 ? errno : EIO;
      return 0;  // curl stops with CURLE_WRITE_ERROR
    }
    written += static_cast<size_t>(n);
  }
  *context->bytes_to_file += bytes;
  return bytes;
}

size_t OnHeader(char* data, size_t size, size_t count, void* user) {
  auto* headers = static_cast<std::map<std::string, std::string>*>(user);
  const size_t bytes = size * count;
  absl::string_view line(data, bytes);
  if (absl::StartsWith(line, "HTTP/")) {
    headers->clear();  // a new response (after a 100 Continue, say)
    return bytes;
  }
  const size_t colon = line.find(':');
  if (colon != absl::string_view::npos) {
    (*headers)[absl::AsciiStrToLower(line.substr(0, colon))] =
        std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
  }
  return bytes;
}

struct UploadContext {
  const std::string* bytes;
  size_t offset = 0;
};

size_t OnUpload(char* buffer, size_t size, size_t count, void* user) {
  auto* context = static_cast<UploadContext*>(user);
  const size_t n = std::min(size * count, context->bytes->size() - context->offset);
  std::memcpy(buffer, context->bytes->data() + context->offset, n);
  context->offset += n;
  return n;
}

}  // namespace

const char* S3ErrorKindName(S3ErrorKind kind) {
  switch (kind) {
    case S3ErrorKind::kNone: return "none";
    case S3ErrorKind::kNetwork: return "network";
    case S3ErrorKind::kTimeout: return "timeout";
    case S3ErrorKind::kThrottled: return "throttled";
    case S3ErrorKind::kServerError: return "server_error";
    case S3ErrorKind::kAccessDenied: return "access_denied";
    case S3ErrorKind::kNotFound: return "not_found";
    case S3ErrorKind::kClientError: return "client_error";
  }
  return "unknown";
}

S3Client::S3Client(S3ClientOptions options) : options_(std::move(options)) {}
S3Client::~S3Client() = default;

absl::StatusOr<std::unique_ptr<S3Client>> S3Client::Create(S3ClientOptions options) {
  InitLibrariesOnce();
  if (options.clock == nullptr) options.clock = Clock::Real();
  if (options.max_attempts < 1) options.max_attempts = 1;
  if (options.region.empty()) options.region = kDefaultS3Region;
  auto client = std::unique_ptr<S3Client>(new S3Client(std::move(options)));
  const std::string& endpoint = client->options_.endpoint;
  if (endpoint.empty()) return client;
  std::optional<HttpUrlParts> parts = SplitHttpUrl(endpoint);
  if (!parts) {
    return absl::InvalidArgumentError(absl::StrCat(
        "S3 endpoint \"", endpoint,
        "\" is not an http:// or https:// URL (e.g. http://127.0.0.1:9000)"));
  }
  const std::string& authority = parts->authority;
  if (authority.empty() || authority.front() == ':' ||
      authority.find_first_of("@?# ") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "S3 endpoint \"", endpoint, "\" has no host (expected http(s)://host[:port])"));
  }
  // Unlike the coordinator's --s3_endpoints, a base path is accepted here.
  std::string base_path = parts->path;
  while (!base_path.empty() && base_path.back() == '/') base_path.pop_back();
  if (base_path.find_first_of("?#") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("S3 endpoint \"", endpoint, "\" may not have a query or fragment"));
  }
  client->scheme_ = parts->scheme;
  client->authority_ = authority;
  client->base_path_ = base_path;
  return client;
}

std::string S3Client::DescribeEndpoint() const {
  if (authority_.empty()) return absl::StrCat("AWS (", options_.region, ")");
  return absl::StrCat(scheme_, "://", authority_, base_path_);
}

std::string S3Client::Url(const Request& request, std::string* host, std::string* path) const {
  const std::string key_path =
      request.key.empty() ? "" : absl::StrCat("/", UriEncode(request.key, /*keep_slash=*/true));
  std::string scheme;
  if (!authority_.empty()) {  // a custom endpoint: path-style
    scheme = scheme_;
    *host = authority_;
    *path = absl::StrCat(base_path_, "/", request.bucket, key_path);
  } else if (absl::StrContains(request.bucket, '.')) {
    // A dotted bucket name does not match the *.s3 TLS certificate: path-style.
    scheme = "https";
    *host = absl::StrCat("s3.", options_.region, ".amazonaws.com");
    *path = absl::StrCat("/", request.bucket, key_path);
  } else {
    scheme = "https";
    *host = absl::StrCat(request.bucket, ".s3.", options_.region, ".amazonaws.com");
    *path = key_path.empty() ? "/" : key_path;
  }
  std::string url = absl::StrCat(scheme, "://", *host, *path);
  for (size_t i = 0; i < request.query.size(); ++i) {
    absl::StrAppend(&url, i == 0 ? "?" : "&", UriEncode(request.query[i].first, false), "=",
                    UriEncode(request.query[i].second, false));
  }
  return url;
}

S3Client::Response S3Client::Attempt(const Request& request) const {
  Response response;
  std::string host, path;
  const std::string url = Url(request, &host, &path);
  const std::string amz_date = AmzDate(*options_.clock);
  const std::string payload_sha256 =
      request.upload == nullptr ? kEmptySha256 : Sha256Hex(*request.upload);

  SigV4Request to_sign;
  to_sign.method = request.method;
  to_sign.path = path;
  to_sign.query = request.query;
  to_sign.payload_sha256 = payload_sha256;
  to_sign.headers = {{"host", host}, {"x-amz-date", amz_date},
                     {"x-amz-content-sha256", payload_sha256}};
  if (!options_.credentials.session_token.empty()) {
    to_sign.headers.emplace_back("x-amz-security-token", options_.credentials.session_token);
  }
  if (!request.range.empty()) to_sign.headers.emplace_back("range", request.range);
  const SigV4Signature signature =
      SignV4(to_sign, options_.credentials, options_.region, "s3", amz_date);

  std::unique_ptr<curl_slist, SlistDeleter> headers;
  auto add_header = [&headers](const std::string& line) {
    headers.reset(curl_slist_append(headers.release(), line.c_str()));
  };
  for (const auto& [name, value] : to_sign.headers) add_header(absl::StrCat(name, ": ", value));
  add_header(absl::StrCat("Authorization: ", signature.authorization));
  add_header("Expect:");  // no 100-continue round trip before a PUT body

  const ThreadCurlHandle handle;
  CURL* curl = handle.get();
  if (curl == nullptr) {
    response.curl_code = CURLE_FAILED_INIT;
    response.curl_error = "curl_easy_init failed";
    return response;
  }
  char error_buffer[CURL_ERROR_SIZE] = {0};
  WriteContext write_context{curl, request.file_fd, &response.body, &response.bytes_to_file,
                             &response.write_errno};
  UploadContext upload_context{request.upload};
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error_buffer);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options_.connect_timeout_ms));
  // Abandon a transfer that moves under 1 byte/s for the stall timeout (whole seconds).
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME,
                   static_cast<long>(std::max<int64_t>(1, (options_.stall_timeout_ms + 999) / 1000)));
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &write_context);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &response.headers);
  const std::string method = request.method;
  if (method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else if (method == "PUT") {
    curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, OnUpload);
    curl_easy_setopt(curl, CURLOPT_READDATA, &upload_context);
    curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE,
                     static_cast<curl_off_t>(request.upload == nullptr ? 0 : request.upload->size()));
  } else if (method != "GET") {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, request.method);
  }
  if (request.file_fd >= 0) {  // a retry starts the file over
    if (::ftruncate(request.file_fd, 0) != 0 || ::lseek(request.file_fd, 0, SEEK_SET) < 0) {
      response.curl_code = CURLE_WRITE_ERROR;
      response.write_errno = errno;
      return response;
    }
  }
  response.curl_code = curl_easy_perform(curl);
  if (response.curl_code != CURLE_OK) {
    response.curl_error = error_buffer[0] != '\0' ? error_buffer
                                                  : curl_easy_strerror(response.curl_code);
    return response;
  }
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.http_status);
  return response;
}

absl::StatusOr<S3Client::Response> S3Client::Execute(const Request& request) const {
  Response response;
  for (int attempt = 1;; ++attempt) {
    const int64_t start = options_.clock->MonotonicNanos();
    response = Attempt(request);
    response.attempts = attempt;
    if (response.curl_code == CURLE_OPERATION_TIMEDOUT) {
      response.kind = S3ErrorKind::kTimeout;
    } else if (response.curl_code == CURLE_WRITE_ERROR && response.write_errno != 0) {
      response.kind = S3ErrorKind::kClientError;  // our own disk, not the store
    } else if (response.curl_code != CURLE_OK) {
      response.kind = S3ErrorKind::kNetwork;
    } else if ((request.accept_416 && response.http_status == 416) ||
               (request.accept_409 && response.http_status == 409)) {
      response.kind = S3ErrorKind::kNone;
    } else {
      response.kind = ClassifyHttp(response.http_status, response.body);
    }
    if (options_.observer != nullptr) {
      options_.observer->OnAttempt(request.op,
                                   (options_.clock->MonotonicNanos() - start) / 1e9, response.kind);
    }
    if (response.kind == S3ErrorKind::kNone) return response;
    if (!Retryable(response.kind) || attempt >= options_.max_attempts) break;
    options_.clock->SleepFor(BackoffNanos(options_, attempt));
  }

  std::string detail;
  if (response.curl_code == CURLE_WRITE_ERROR && response.write_errno != 0) {
    detail = absl::StrCat("cannot write the local file: ", std::strerror(response.write_errno));
  } else if (response.curl_code != CURLE_OK) {
    detail = absl::StrCat("curl error ", static_cast<int>(response.curl_code), " (",
                          response.curl_error, ")");
  } else {
    detail = DescribeHttpError(response.http_status, response.body);
  }
  std::string message =
      absl::StrCat("S3 ", request.s3_op, " ",
                   FormatS3Uri(S3Uri{request.bucket, request.shown_key}), ": ", detail,
                   " at ", DescribeEndpoint());
  if (response.attempts > 1) absl::StrAppend(&message, " (after ", response.attempts, " attempts)");
  switch (response.kind) {
    case S3ErrorKind::kNotFound:
      return absl::NotFoundError(message);
    case S3ErrorKind::kAccessDenied:
      absl::StrAppend(&message, "; check the credentials (from ", options_.credentials.origin,
                      "), the region and the bucket's policy");
      return absl::PermissionDeniedError(message);
    case S3ErrorKind::kClientError:
      if (response.curl_code != CURLE_OK) return absl::UnavailableError(message);
      return absl::InvalidArgumentError(message);
    default:
      return absl::UnavailableError(message);
  }
}

absl::StatusOr<S3Listing> S3Client::List(const std::string& bucket, const std::string& prefix,
                                         const std::string& delimiter) {
  return ListPages(bucket, prefix, delimiter, /*max_keys=*/0);
}

absl::StatusOr<S3Listing> S3Client::ListFirstPage(const std::string& bucket,
                                                  const std::string& prefix,
                                                  const std::string& delimiter, int max_keys) {
  return ListPages(bucket, prefix, delimiter, std::max(max_keys, 1));
}

absl::StatusOr<S3Listing> S3Client::ListPages(const std::string& bucket,
                                              const std::string& prefix,
                                              const std::string& delimiter, int max_keys) const {
  S3Listing listing;
  std::string token;
  for (int page = 1;; ++page) {
    Request request;
    request.op = "list";
    request.s3_op = "ListObjectsV2";
    request.bucket = bucket;
    request.shown_key = prefix;
    request.query = {{"list-type", "2"}};
    if (!prefix.empty()) request.query.emplace_back("prefix", prefix);
    if (!delimiter.empty()) request.query.emplace_back("delimiter", delimiter);
    if (!token.empty()) request.query.emplace_back("continuation-token", token);
    if (max_keys > 0) request.query.emplace_back("max-keys", absl::StrCat(max_keys));
    ASSIGN_OR_RETURN(Response response, Execute(request));

    auto malformed = [&](absl::string_view why) {
      return absl::UnavailableError(absl::StrCat(
          "S3 ListObjectsV2 ", FormatS3Uri(S3Uri{bucket, prefix}), " page ", page, ": ", why,
          " at ", DescribeEndpoint()));
    };
    XmlDoc doc = ParseXml(response.body);
    const xmlNode* root = doc ? xmlDocGetRootElement(doc.get()) : nullptr;
    if (root == nullptr || !IsElement(root, "ListBucketResult")) {
      return malformed(absl::StrCat("the response is not a ListBucketResult (",
                                    Snippet(response.body), ")"));
    }
    for (const xmlNode* child = root->children; child != nullptr; child = child->next) {
      if (IsElement(child, "Contents")) {
        S3Object object;
        object.key = ChildText(child, "Key");
        if (!absl::SimpleAtoi(ChildText(child, "Size"), &object.size)) {
          return malformed(absl::StrCat("object ", object.key, " has no valid Size"));
        }
        object.etag = StripQuotes(ChildText(child, "ETag"));
        object.mtime_nanos = ParseIsoTimeNanos(ChildText(child, "LastModified"));
        listing.objects.push_back(std::move(object));
      } else if (IsElement(child, "CommonPrefixes")) {
        listing.common_prefixes.push_back(ChildText(child, "Prefix"));
      }
    }
    if (max_keys > 0 || ChildText(root, "IsTruncated") != "true") break;
    std::string next = ChildText(root, "NextContinuationToken");
    if (next.empty() || next == token) {
      return malformed("a truncated listing without a new NextContinuationToken");
    }
    token = std::move(next);
  }
  auto by_key = [](const S3Object& a, const S3Object& b) { return a.key < b.key; };
  std::sort(listing.objects.begin(), listing.objects.end(), by_key);
  std::sort(listing.common_prefixes.begin(), listing.common_prefixes.end());
  listing.common_prefixes.erase(
      std::unique(listing.common_prefixes.begin(), listing.common_prefixes.end()),
      listing.common_prefixes.end());
  return listing;
}

absl::StatusOr<S3Object> S3Client::Head(const std::string& bucket, const std::string& key) {
  Request request = Request::OnObject("head", "HeadObject", "HEAD", bucket, key);
  ASSIGN_OR_RETURN(Response response, Execute(request));
  S3Object object;
  object.key = key;
  if (!absl::SimpleAtoi(response.headers["content-length"], &object.size)) {
    return absl::UnavailableError(absl::StrCat("S3 HeadObject ", FormatS3Uri(S3Uri{bucket, key}),
                                               ": the response has no Content-Length at ",
                                               DescribeEndpoint()));
  }
  object.etag = StripQuotes(response.headers["etag"]);
  object.mtime_nanos = ParseHttpDateNanos(response.headers["last-modified"]);
  return object;
}

absl::StatusOr<std::string> S3Client::GetRange(const std::string& bucket, const std::string& key,
                                               uint64_t offset, uint64_t length) {
  if (length == 0) {  // nothing to read, but a missing object is still NOT_FOUND
    RETURN_IF_ERROR(Head(bucket, key).status());
    return std::string();
  }
  const uint64_t last = offset + std::min(length, UINT64_MAX - offset) - 1;
  Request request = Request::OnObject("get", "GetObject", "GET", bucket, key);
  request.range = absl::StrCat("bytes=", offset, "-", last);
  request.accept_416 = true;
  ASSIGN_OR_RETURN(Response response, Execute(request));
  if (response.http_status == 416) return std::string();  // starts at or past the end
  if (response.http_status == 206) return std::move(response.body);
  // A store that ignored the Range header sent the whole object.
  if (offset >= response.body.size()) return std::string();
  return response.body.substr(offset, length);
}

absl::Status S3Client::GetToFile(const std::string& bucket, const std::string& key,
                                 const std::string& path, int64_t expected_size) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int error = errno;
    const std::string message = absl::StrCat("S3 GetObject ", FormatS3Uri(S3Uri{bucket, key}),
                                             ": cannot create ", path, ": ", std::strerror(error));
    return error == EACCES ? absl::PermissionDeniedError(message) : absl::UnavailableError(message);
  }
  Request request = Request::OnObject("get", "GetObject", "GET", bucket, key);
  request.file_fd = fd;
  absl::StatusOr<Response> response = Execute(request);
  // Synced before it is closed: the cache publishes the file by renaming its folder.
  const int sync_result = response.ok() ? ::fsync(fd) : 0;
  const int sync_errno = errno;
  const int close_result = ::close(fd);
  const int close_errno = errno;
  if (!response.ok()) {
    return absl::Status(response.status().code(),
                        absl::StrCat(response.status().message(), " (into ", path, ")"));
  }
  const std::string where = absl::StrCat("S3 GetObject ", FormatS3Uri(S3Uri{bucket, key}),
                                         " into ", path);
  if (sync_result != 0) {
    return absl::UnavailableError(absl::StrCat(where, ": fsync: ", std::strerror(sync_errno)));
  }
  if (close_result != 0) {
    return absl::UnavailableError(absl::StrCat(where, ": close: ", std::strerror(close_errno)));
  }
  uint64_t content_length = 0;
  if (absl::SimpleAtoi(response->headers["content-length"], &content_length) &&
      content_length != response->bytes_to_file) {
    return absl::DataLossError(absl::StrCat(where, ": received ", response->bytes_to_file,
                                            " bytes, Content-Length said ", content_length));
  }
  if (expected_size >= 0 && response->bytes_to_file != static_cast<uint64_t>(expected_size)) {
    return absl::DataLossError(absl::StrCat(
        where, ": received ", response->bytes_to_file, " bytes, expected ", expected_size,
        " (was the object rewritten since it was listed?)"));
  }
  return absl::OkStatus();
}

absl::Status S3Client::Put(const std::string& bucket, const std::string& key,
                           const std::string& bytes) {
  Request request = Request::OnObject("put", "PutObject", "PUT", bucket, key);
  request.upload = &bytes;
  return Execute(request).status();
}

absl::Status S3Client::Delete(const std::string& bucket, const std::string& key) {
  Request request = Request::OnObject("delete", "DeleteObject", "DELETE", bucket, key);
  return Execute(request).status();
}

absl::Status S3Client::CreateBucket(const std::string& bucket) {
  // Outside us-east-1, AWS wants the region named in the body as well.
  const std::string body =
      authority_.empty() && options_.region != kDefaultS3Region
          ? absl::StrCat("<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                         "<LocationConstraint>",
                         options_.region, "</LocationConstraint></CreateBucketConfiguration>")
          : "";
  Request request;
  request.op = "create_bucket";
  request.s3_op = "CreateBucket";
  request.method = "PUT";
  request.bucket = bucket;
  request.upload = &body;
  request.accept_409 = true;
  ASSIGN_OR_RETURN(Response response, Execute(request));
  if (response.http_status == 409) {
    const std::string code = S3ErrorCode(response.body);
    if (code == "BucketAlreadyOwnedByYou") return absl::OkStatus();
    return absl::AlreadyExistsError(absl::StrCat("S3 CreateBucket s3://", bucket, ": ",
                                                 DescribeHttpError(409, response.body), " at ",
                                                 DescribeEndpoint()));
  }
  return absl::OkStatus();
}

}  // namespace steadyeval
