// Test helpers for HTTP endpoints on this machine (the coordinator's and the worker's
// /metrics, Prometheus's API): a plain HTTP GET and a reader for one sample of the text
// exposition format. Header-only.
#ifndef STEADYEVAL_TESTING_HTTP_H_
#define STEADYEVAL_TESTING_HTTP_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdlib>
#include <optional>
#include <sstream>
#include <string>

namespace steadyeval::testing {

// Plain HTTP/1.0 GET against 127.0.0.1:port; the whole response (status line, headers,
// body), or "" when the connection fails. A server that stops answering for 10 s ends the
// read (what arrived is returned).
inline std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  timeval timeout{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
      char buf[8192];
      ssize_t n = 0;
      while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) response.append(buf, static_cast<size_t>(n));
    }
  }
  close(fd);
  return response;
}

// The body of a "200 OK" response from HttpGet; "" for anything else.
inline std::string HttpOkBody(const std::string& response) {
  const size_t body = response.find("\r\n\r\n");
  if (response.compare(0, 7, "HTTP/1.") != 0 || response.compare(8, 5, " 200 ") != 0 ||
      body == std::string::npos) {
    return "";
  }
  return response.substr(body + 4);
}

// The value of the sample whose name and labels are exactly `series` (as exposed, e.g.
// `steadyeval_rpcs_total{code="OK",method="EvalService/GetRun"}`; prometheus-cpp sorts
// labels by name) in exposition text; nullopt when there is no such line.
inline std::optional<double> SampleValue(const std::string& exposition, const std::string& series) {
  std::istringstream lines(exposition);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::strtod(line.c_str() + series.size() + 1, nullptr);
    }
  }
  return std::nullopt;
}

}  // namespace steadyeval::testing

#endif  // STEADYEVAL_TESTING_HTTP_H_
