#!/busybox/sh
# Makes the certificate set in /certs on the first start of deploy/compose.yaml
# and copies the gateway's folder to /etc/ssegw/tls, the gateway's tls.dir.
# Later starts keep the existing set. /certs/qlik is Qlik's client folder;
# /certs/ca contains the root's key and stays in this volume only.
set -eu

if [ -f /certs/gateway/sse_server_key.pem ]; then
	echo "keeping the certificates in the certs volume"
else
	/usr/local/bin/ssegw certs init --out /certs --hosts "$CERT_HOSTS"
fi
cp /certs/gateway/root_cert.pem /certs/gateway/sse_server_cert.pem /certs/gateway/sse_server_key.pem /etc/ssegw/tls/
