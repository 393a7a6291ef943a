// MakeTestCertificates (etcd_process.h): throw-away PKI for the TLS tests.

#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "controller/store/testing/etcd_process.h"

namespace tandem::store::testing {

namespace {

Status Run(const std::string& dir, const std::string& command) {
  // Each openssl call is bounded by its own work (no prompts: -subj, -nodes).
  const std::string full = "cd '" + dir + "' && " + command + " >>openssl.log 2>&1";
  int rc = std::system(full.c_str());
  if (rc != 0) {
    return Status::Internal("openssl failed (" + std::to_string(rc) + "): " + command + " (see " +
                            dir + "/openssl.log)");
  }
  return Status::Ok();
}

Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  return out.good() ? Status::Ok() : Status::Internal("cannot write " + path);
}

}  // namespace

Status MakeTestCertificates(const std::string& dir) {
  if (::access("/usr/bin/openssl", X_OK) != 0) {
    return Status::NotFound("/usr/bin/openssl not found (Debian package openssl)");
  }
  const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  TANDEM_RETURN_IF_ERROR(WriteFile(dir + "/server.ext",
                                   "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                   "extendedKeyUsage=serverAuth\n"));
  TANDEM_RETURN_IF_ERROR(WriteFile(dir + "/client.ext", "extendedKeyUsage=clientAuth\n"));
  for (const std::string ca : {"ca", "other-ca"}) {
    TANDEM_RETURN_IF_ERROR(Run(dir, "openssl req -x509 " + ec + " -keyout " + ca +
                                        "-key.pem -out " + ca + ".pem -days 2 -subj /CN=" + ca));
  }
  for (const std::string leaf : {"server", "client"}) {
    TANDEM_RETURN_IF_ERROR(Run(dir, "openssl req " + ec + " -keyout " + leaf + "-key.pem -out " +
                                        leaf + ".csr -subj /CN=tandem-" + leaf));
    TANDEM_RETURN_IF_ERROR(Run(dir, "openssl x509 -req -in " + leaf + ".csr -CA ca.pem" +
                                        " -CAkey ca-key.pem -CAcreateserial -days 2 -out " + leaf +
                                        ".pem -extfile " + leaf + ".ext"));
  }
  return Status::Ok();
}

}  // namespace tandem::store::testing
