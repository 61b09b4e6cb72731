#!/usr/bin/env bash
# TLS for the local PostgreSQL (127.0.0.1:5432), for the Postgres sink's TLS tests: a CA of our
# own, a server certificate it signs (DNS localhost and IP 127.0.0.1, nothing else, so a
# connection under any other name must be refused), and a second CA that signed nothing (the
# "wrong CA"). Idempotent: the files are made once under DIR (kept while the server certificate
# has more than a week to live), and the server is reconfigured (ALTER SYSTEM, reload) only when
# it does not use them yet. Plain connections keep working: pg_hba's `host` lines take both.
#
#   .ci/postgres-tls.sh DIR        # then DIR/ca.pem, DIR/other-ca.pem
set -euo pipefail
dir=${1:?usage: postgres-tls.sh DIR}
psql_root=(psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -X -Atq -v ON_ERROR_STOP=1)

fresh() {
    [[ -s $dir/ca.pem && -s $dir/other-ca.pem && -s $dir/server.pem && -s $dir/server.key ]] &&
        openssl x509 -in "$dir/server.pem" -noout -checkend 604800 >/dev/null &&
        openssl verify -CAfile "$dir/ca.pem" "$dir/server.pem" >/dev/null 2>&1
}

if ! fresh; then
    mkdir -p "$dir"
    tmp=$(mktemp -d "$dir/.new.XXXXXX")
    # Two CAs (EC P-256, ten years), then the server's key and certificate (one year).
    for ca in ca other-ca; do
        openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
            -keyout "$tmp/$ca.key" -out "$tmp/$ca.pem" -days 3650 -subj "/CN=Keel CI $ca" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    done
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$tmp/server.key" -out "$tmp/server.csr" -subj "/CN=localhost" 2>/dev/null
    cat >"$tmp/server.ext" <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
EOF
    openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" \
        -CAcreateserial -days 365 -extfile "$tmp/server.ext" -out "$tmp/server.pem" 2>/dev/null
    rm -f "$tmp/ca.key" "$tmp/other-ca.key" "$tmp/server.csr" "$tmp/server.ext" "$tmp"/*.srl
    for f in ca.pem other-ca.pem server.pem server.key; do mv -f "$tmp/$f" "$dir/$f"; done
    rmdir "$tmp"
fi
# The server reads its key only if the postgres user owns it and nobody else may read it.
chown -R postgres:postgres "$dir"
chmod 0755 "$dir"
chmod 0644 "$dir/ca.pem" "$dir/other-ca.pem" "$dir/server.pem"
chmod 0600 "$dir/server.key"

current=$("${psql_root[@]}" -c "SELECT current_setting('ssl') || ' ' ||
    current_setting('ssl_cert_file') || ' ' || current_setting('ssl_key_file')")
if [[ $current != "on $dir/server.pem $dir/server.key" ]]; then
    "${psql_root[@]}" <<EOF
ALTER SYSTEM SET ssl = on;
ALTER SYSTEM SET ssl_cert_file = '$dir/server.pem';
ALTER SYSTEM SET ssl_key_file = '$dir/server.key';
SELECT pg_reload_conf() \gset
EOF
fi

# The check a client makes: verify-full against our CA, under the certificate's name. A reload
# is asynchronous: a few tries.
for _ in $(seq 1 50); do
    if PGSSLMODE=verify-full PGSSLROOTCERT="$dir/ca.pem" psql -h localhost -p 5432 -U postgres \
        -d postgres -X -Atq -c 'SELECT 1' >/dev/null 2>&1; then
        exit 0
    fi
    sleep 0.2
done
echo "PostgreSQL does not serve the certificate from $dir over TLS (see its log)" >&2
PGSSLMODE=verify-full PGSSLROOTCERT="$dir/ca.pem" psql -h localhost -p 5432 -U postgres \
    -d postgres -X -Atq -c 'SELECT 1' >&2 || true
exit 1
