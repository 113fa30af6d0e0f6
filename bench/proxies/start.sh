#!/bin/sh
# Runs nginx or HAProxy as a WebSocket reverse proxy in the foreground, so the
# caller owns the process: stop it with SIGTERM (nginx's master then stops its
# workers; SIGKILL would leave them running).
#
#     bench/proxies/start.sh nginx   9101 9100 2 /tmp/tether-nginx
#     bench/proxies/start.sh haproxy 9102 9100 2 /tmp/tether-haproxy
#     bench/proxies/start.sh nginx   9103 9100 2 /tmp/tether-nginx-tls /tmp/pki
#
# Renders NAME's template from this directory into PREFIX (created if
# missing; also where pid, logs and temp files go), then execs the proxy.
# With TLS_DIR (a directory holding cert.pem and key.pem), the proxy
# terminates TLS on its listener (TLS 1.2 and 1.3, ALPN http/1.1) and still
# speaks plain WebSocket to the backend.
set -eu

usage() {
    echo "usage: $0 nginx|haproxy LISTEN_PORT BACKEND_PORT WORKERS PREFIX [TLS_DIR]" >&2
    exit 2
}

[ $# -eq 5 ] || [ $# -eq 6 ] || usage
NAME=$1
LISTEN_PORT=$2
BACKEND_PORT=$3
WORKERS=$4
PREFIX=$5
TLS_DIR=${6:-}

case $NAME in
    nginx | haproxy) ;;
    *) usage ;;
esac
for n in "$LISTEN_PORT" "$BACKEND_PORT" "$WORKERS"; do
    case $n in
        '' | *[!0-9]*) echo "$0: not a number: '$n'" >&2; usage ;;
    esac
done
case $PREFIX$TLS_DIR in
    *'|'* | *'&'* | *'\'*) echo "$0: PREFIX and TLS_DIR must not contain | & or \\" >&2; exit 2 ;;
esac
if [ -n "$TLS_DIR" ]; then
    for f in cert.pem key.pem; do
        [ -r "$TLS_DIR/$f" ] || { echo "$0: $TLS_DIR/$f is missing" >&2; exit 2; }
    done
    TLS_DIR=$(cd "$TLS_DIR" && pwd)
fi

HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$PREFIX"
PREFIX=$(cd "$PREFIX" && pwd)
PATH="$PATH:/usr/sbin:/sbin"

# Every proxied WebSocket takes two descriptors. Raise the limit past the
# hard one when privileged (CAP_SYS_RESOURCE), else up to it.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -H -n)" 2>/dev/null || true
NOFILE=$(ulimit -n)
case $NOFILE in
    unlimited) NOFILE=1048576 ;;
esac
WORKER_CONNECTIONS=40960
if [ "$NOFILE" -lt "$WORKER_CONNECTIONS" ]; then
    WORKER_CONNECTIONS=$NOFILE
fi
echo "$0: starting $NAME on 127.0.0.1:$LISTEN_PORT -> 127.0.0.1:$BACKEND_PORT, $WORKERS workers, descriptor limit $NOFILE" >&2

render() {
    sed -e "s|@LISTEN_PORT@|$LISTEN_PORT|g" \
        -e "s|@BACKEND_PORT@|$BACKEND_PORT|g" \
        -e "s|@WORKERS@|$WORKERS|g" \
        -e "s|@PREFIX@|$PREFIX|g" \
        -e "s|@NOFILE@|$NOFILE|g" \
        -e "s|@WORKER_CONNECTIONS@|$WORKER_CONNECTIONS|g" \
        -e "s|@LISTEN_SSL@|$LISTEN_SSL|g" \
        -e "s|@BIND_SSL@|$BIND_SSL|g" \
        "$HERE/$1" >"$PREFIX/$2"
}

# TLS: nginx gets `ssl` on its listen line and includes tls.conf (empty
# without TLS); HAProxy gets `ssl crt` on its bind line, with certificate and
# key in one PEM file as it prefers.
LISTEN_SSL=
BIND_SSL=
: >"$PREFIX/tls.conf"
if [ -n "$TLS_DIR" ]; then
    LISTEN_SSL=ssl
    BIND_SSL=" ssl crt $PREFIX/haproxy.pem alpn http/1.1"
    (umask 077 && cat "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem" >"$PREFIX/haproxy.pem")
    # nginx 1.22 leaves TLS 1.3 out of its default ssl_protocols.
    cat >"$PREFIX/tls.conf" <<EOF
ssl_certificate $TLS_DIR/cert.pem;
ssl_certificate_key $TLS_DIR/key.pem;
ssl_protocols TLSv1.2 TLSv1.3;
EOF
fi

case $NAME in
    nginx)
        render nginx.conf.in nginx.conf
        exec nginx -c "$PREFIX/nginx.conf" -p "$PREFIX/"
        ;;
    haproxy)
        render haproxy.cfg.in haproxy.cfg
        exec haproxy -db -f "$PREFIX/haproxy.cfg"
        ;;
    *)
        usage
        ;;
esac
