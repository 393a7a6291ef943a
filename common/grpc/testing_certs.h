#pragma once
// Test certificates, made by the openssl CLI in a temp dir: a CA ("ca"), a
// server certificate for 127.0.0.1 / localhost and a client certificate
// ("client") signed by it, and a client certificate ("stranger") from
// another CA ("other"). Files: <name>.crt / <name>.key. For TLS tests only.

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/grpc/tls.h"

namespace tandem::rpc::test_certs {

class TestCertificates {
 public:
  // Makes them; ok() is false (and error() says why) when openssl fails.
  TestCertificates() {
    char tmpl[] = "/tmp/tandem_test_certs.XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      error_ = "mkdtemp failed";
      return;
    }
    dir_ = tmpl;
    const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string script =
        "set -e; cd " + dir_ + "; exec 2>openssl.log\n" +
        "for ca in ca other; do openssl req -x509" + ec +
        " -keyout $ca.key -out $ca.crt -days 2 -subj /CN=tandem-test-$ca; done\n" +
        "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > server.ext\n" + "openssl req" +
        ec + " -keyout server.key -out server.csr -subj /CN=tandem-server\n" +
        "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial" +
        " -out server.crt -days 2 -extfile server.ext\n" +
        "for c in client:ca stranger:other; do n=${c%%:*}; s=${c##*:}\n" + " openssl req" + ec +
        " -keyout $n.key -out $n.csr -subj /CN=$n\n" +
        " openssl x509 -req -in $n.csr -CA $s.crt -CAkey $s.key -CAcreateserial" +
        " -out $n.crt -days 2\ndone\n";
    std::ofstream(dir_ + "/make_certs.sh") << script;
    if (std::system(("bash " + dir_ + "/make_certs.sh").c_str()) != 0) {
      error_ = "openssl could not make the test certificates (see " + dir_ + "/openssl.log)";
    }
  }
  ~TestCertificates() {
    if (ok() && !dir_.empty()) std::filesystem::remove_all(dir_);
  }
  TestCertificates(const TestCertificates&) = delete;
  TestCertificates& operator=(const TestCertificates&) = delete;

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  std::string File(const std::string& name) const { return dir_ + "/" + name; }

  // The server's side; with `mutual`, clients must present a cert of "ca".
  TlsConfig Server(bool mutual) const {
    return {File("server.crt"), File("server.key"), mutual ? File("ca.crt") : ""};
  }
  // A client trusting "ca" and presenting the certificate `name`
  // ("client", "stranger"; "" for none).
  TlsConfig Client(const std::string& name) const {
    if (name.empty()) return {"", "", File("ca.crt")};
    return {File(name + ".crt"), File(name + ".key"), File("ca.crt")};
  }

 private:
  std::string dir_;
  std::string error_;
};

}  // namespace tandem::rpc::test_certs
