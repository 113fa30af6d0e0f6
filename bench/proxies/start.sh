#!/bin/sh
# Runs nginx or HAProxy as a WebSocket reverse proxy in the foreground, so the
# caller owns the process: stop it with SIGTERM (nginx's master then stops its
# workers; SIGKILL would leave them running).
#
#     bench/proxies/start.sh nginx   9101 9100 2 /tmp/tether-nginx
#     bench/proxies/start.sh haproxy 9102 9100 2 /tmp/tether-haproxy
#
# Renders NAME's template from this directory into PREFIX (created if
# missing; also where pid, logs and temp files go), then execs the proxy.
set -eu

usage() {
    echo "usage: $0 nginx|haproxy LISTEN_PORT BACKEND_PORT WORKERS PREFIX" >&2
    exit 2
}

[ $# -eq 5 ] || usage
NAME=$1
LISTEN_PORT=$2
BACKEND_PORT=$3
WORKERS=$4
PREFIX=$5

case $NAME in
    nginx | haproxy) ;;
    *) usage ;;
esac
for n in "$LISTEN_PORT" "$BACKEND_PORT" "$WORKERS"; do
    case $n in
        '' | *[!0-9]*) echo "$0: not a number: '$n'" >&2; usage ;;
    esac
done
case $PREFIX in
    *'|'* | *'&'* | *'\'*) echo "$0: PREFIX must not contain | & or \\" >&2; exit 2 ;;
esac

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
        "$HERE/$1" >"$PREFIX/$2"
}

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
