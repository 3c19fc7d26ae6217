// Throw-away X.509 credentials for the TLS tests: a CA and a certificate it
// signed, written as DIR/ca.pem, DIR/cert.pem, DIR/key.pem (the layout of
// --tls-creds), made with GnuTLS's API (no certtool package needed).
#pragma once

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <string>

#include "common/error.hpp"

namespace lm::transport::testing {

namespace tls_certs_detail {

inline Result<void> check(int rc, const char* what) {
  if (rc < 0) return Error::msg(strf("test certificates: %s: %s", what, gnutls_strerror(rc)));
  return ok();
}

inline Result<void> write_file(const std::string& path, const gnutls_datum_t& d) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) return Error::from_errno("test certificates: open " + path);
  size_t n = std::fwrite(d.data, 1, d.size, f);
  std::fclose(f);
  if (n != d.size) return Error::msg("test certificates: short write to " + path);
  return ok();
}

struct Key {
  gnutls_x509_privkey_t k = nullptr;
  ~Key() {
    if (k) gnutls_x509_privkey_deinit(k);
  }
};
struct Crt {
  gnutls_x509_crt_t c = nullptr;
  ~Crt() {
    if (c) gnutls_x509_crt_deinit(c);
  }
};

// A certificate for `key` with subject CN=`cn`, signed by (issuer, issuer_key),
// or self-signed when issuer is null.
inline Result<void> make_cert(Crt& out, Key& key, const char* cn, bool is_ca, uint8_t serial, Crt* issuer,
                              Key* issuer_key) {
  LM_TRY(check(gnutls_x509_privkey_init(&key.k), "privkey init"));
  LM_TRY(check(gnutls_x509_privkey_generate(key.k, GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0),
               "generate key"));
  LM_TRY(check(gnutls_x509_crt_init(&out.c), "crt init"));
  gnutls_x509_crt_t c = out.c;
  LM_TRY(check(gnutls_x509_crt_set_version(c, 3), "version"));
  LM_TRY(check(gnutls_x509_crt_set_serial(c, &serial, 1), "serial"));
  time_t now = std::time(nullptr);
  LM_TRY(check(gnutls_x509_crt_set_activation_time(c, now - 3600), "activation"));
  LM_TRY(check(gnutls_x509_crt_set_expiration_time(c, now + 86400), "expiration"));
  LM_TRY(check(gnutls_x509_crt_set_dn_by_oid(c, GNUTLS_OID_X520_COMMON_NAME, 0, cn, unsigned(std::strlen(cn))), "cn"));
  LM_TRY(check(gnutls_x509_crt_set_key(c, key.k), "key"));
  LM_TRY(check(gnutls_x509_crt_set_basic_constraints(c, is_ca ? 1 : 0, -1), "basic constraints"));
  if (is_ca) {
    LM_TRY(check(gnutls_x509_crt_set_key_usage(c, GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN), "key usage"));
  } else {
    LM_TRY(check(gnutls_x509_crt_set_key_usage(c, GNUTLS_KEY_DIGITAL_SIGNATURE), "key usage"));
    LM_TRY(check(gnutls_x509_crt_set_key_purpose_oid(c, GNUTLS_KP_TLS_WWW_SERVER, 0), "purpose server"));
    LM_TRY(check(gnutls_x509_crt_set_key_purpose_oid(c, GNUTLS_KP_TLS_WWW_CLIENT, 0), "purpose client"));
  }
  if (issuer)
    LM_TRY(check(gnutls_x509_crt_sign2(c, issuer->c, issuer_key->k, GNUTLS_DIG_SHA256, 0), "sign"));
  else
    LM_TRY(check(gnutls_x509_crt_sign2(c, c, key.k, GNUTLS_DIG_SHA256, 0), "self-sign"));
  return ok();
}

}  // namespace tls_certs_detail

// Writes a fresh CA ("CN=<ca_name>") and a certificate it signed into `dir`.
inline Result<void> write_test_creds(const std::string& dir, const char* ca_name) {
  using namespace tls_certs_detail;
  std::filesystem::create_directories(dir);
  Key ca_key, key;
  Crt ca, cert;
  LM_TRY(make_cert(ca, ca_key, ca_name, true, 1, nullptr, nullptr));
  LM_TRY(make_cert(cert, key, "livemig peer", false, 2, &ca, &ca_key));
  gnutls_datum_t d{};
  LM_TRY(check(gnutls_x509_crt_export2(ca.c, GNUTLS_X509_FMT_PEM, &d), "export ca"));
  auto w1 = write_file(dir + "/ca.pem", d);
  gnutls_free(d.data);
  LM_TRY(std::move(w1));
  LM_TRY(check(gnutls_x509_crt_export2(cert.c, GNUTLS_X509_FMT_PEM, &d), "export cert"));
  auto w2 = write_file(dir + "/cert.pem", d);
  gnutls_free(d.data);
  LM_TRY(std::move(w2));
  LM_TRY(check(gnutls_x509_privkey_export2(key.k, GNUTLS_X509_FMT_PEM, &d), "export key"));
  auto w3 = write_file(dir + "/key.pem", d);
  gnutls_free(d.data);
  return w3;
}

}  // namespace lm::transport::testing
