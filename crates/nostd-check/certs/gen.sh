#!/bin/sh
# Regenerates the nostd-check test PKI: an EC P-256 CA and a leaf for DNS name
# "localhost", both valid 2025-01-01..2035-01-01. TEST ONLY: the server's private
# key is committed (the CA key is thrown away). Run from this directory: `sh gen.sh`.
# `openssl ca` is used because OpenSSL 3.0 `x509`/`req` cannot set notBefore.
set -eu
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/ca.cnf" <<CNF
[ca]
default_ca = test_ca
[test_ca]
database = $work/index.txt
new_certs_dir = $work
serial = $work/serial
default_md = sha256
policy = any
copy_extensions = none
unique_subject = no
[any]
commonName = supplied
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[v3_leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
: > "$work/index.txt"
echo 01 > "$work/serial"
dates="-startdate 20250101000000Z -enddate 20350101000000Z"

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/ca.key.pem"
openssl req -new -key "$work/ca.key.pem" -subj "/CN=tether nostd-check test CA" -out "$work/ca.csr"
# shellcheck disable=SC2086
openssl ca -batch -config "$work/ca.cnf" -selfsign -keyfile "$work/ca.key.pem" -in "$work/ca.csr" \
    -extensions v3_ca $dates -notext -out ca.pem

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server.key.pem
openssl req -new -key server.key.pem -subj "/CN=localhost" -out "$work/server.csr"
# shellcheck disable=SC2086
openssl ca -batch -config "$work/ca.cnf" -cert ca.pem -keyfile "$work/ca.key.pem" -in "$work/server.csr" \
    -extensions v3_leaf $dates -notext -out server.pem

openssl verify -CAfile ca.pem server.pem
# The CA as DER too: the skeleton's client trusts it as a firmware image would hold it.
openssl x509 -in ca.pem -outform der -out ca.der
