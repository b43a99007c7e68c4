#!/usr/bin/env bash
# Regenerates the static test PKI used by the core's unit tests and doctests.
# (Integration tests make their certificates with `tether pki` at run time.)
set -euo pipefail
cd "$(dirname "$0")"
days=36500
ec() { openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out "$1"; }
ca() { # name cn
  ec "$1.key"
  openssl req -x509 -new -key "$1.key" -subj "/CN=$2" -days $days -sha256 \
    -addext basicConstraints=critical,CA:true -addext keyUsage=critical,keyCertSign,cRLSign -out "$1.pem"
}
leaf() { # name ca cn san eku
  ec "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$3" -out "$1.csr"
  printf 'basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\n%s\n' "$5" "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days $days -sha256 -extfile "$1.ext" -out "$1.pem"
  rm -f "$1.csr" "$1.ext"
}
ca ca "tether test CA"
ca other-ca "some other CA"
# DER too, for the example of a CA built into a firmware image (`Trust::with_static_root`).
openssl x509 -in ca.pem -outform der -out ca.der
leaf server ca localhost "subjectAltName=DNS:localhost,IP:127.0.0.1" serverAuth
leaf client ca device-1 "" clientAuth
leaf other-server other-ca localhost "subjectAltName=DNS:localhost,IP:127.0.0.1" serverAuth
leaf other-client other-ca device-2 "" clientAuth
rm -f *.srl
