#!/bin/sh
# make-certs.sh DIR [NAME...] - a throwaway certificate authority and one
# certificate per NAME (default: node-1 node-2 node-3), for the demo and the
# tests. Never for production: the CA's key sits next to the certificates.
#
#   DIR/ca.pem, DIR/ca.key            the CA (10 years, EC P-256)
#   DIR/NAME.pem, DIR/NAME.key        signed by it; CN=NAME, SAN IP:127.0.0.1,
#                                     127.0.0.2 and DNS:localhost; usable as
#                                     a server and a client certificate
#
# Existing files in DIR are kept (a rerun adds only what is missing). Keys are
# 0600. Needs only the openssl command-line tool.
set -eu
dir=${1:?usage: make-certs.sh DIR [NAME...]}
shift
[ $# -gt 0 ] || set -- node-1 node-2 node-3
mkdir -p "$dir"
umask 077
if [ ! -s "$dir/ca.pem" ]; then
	openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
		-nodes -keyout "$dir/ca.key" -out "$dir/ca.pem" -days 3650 \
		-subj "/CN=flowd test CA $(basename "$dir")" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi
for name in "$@"; do
	[ -s "$dir/$name.pem" ] && continue
	ext="$dir/$name.ext"
	cat >"$ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=IP:127.0.0.1,IP:127.0.0.2,DNS:localhost
EXT
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$dir/$name.key" -out "$dir/$name.csr" \
		-subj "/CN=$name" 2>/dev/null
	openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" \
		-CAkey "$dir/ca.key" -CAcreateserial -out "$dir/$name.pem" \
		-days 825 -extfile "$ext" 2>/dev/null
	rm -f "$dir/$name.csr" "$ext"
done
chmod 644 "$dir"/*.pem
