#!/bin/sh
# Installs nginx and HAProxy for the proxy comparison (Debian/Ubuntu), without
# letting the packages start their system services: the benchmarks run each
# proxy as a foreground process of their own (see start.sh), and port 80 is
# not needed. Idempotent: does nothing but print versions when both are there.
#
#     bench/proxies/install.sh
set -eu

SUDO=
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
fi

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

if ! have nginx || ! have haproxy; then
    # Debian 12's nginx-light is only nginx plus the echo module, so plain
    # nginx is the smaller install; older releases had a real nginx-light.
    NGINX_PKG=nginx
    if ! apt-cache show nginx >/dev/null 2>&1; then
        NGINX_PKG=nginx-light
    fi

    # policy-rc.d answering 101 stops invoke-rc.d from starting the services
    # the packages install. Keep an existing one (e.g. Docker's) as it is.
    POLICY=/usr/sbin/policy-rc.d
    ADDED_POLICY=
    if [ ! -e "$POLICY" ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
        $SUDO chmod 755 "$POLICY"
        ADDED_POLICY=1
    fi
    cleanup() {
        if [ -n "$ADDED_POLICY" ]; then
            $SUDO rm -f "$POLICY"
        fi
    }
    trap cleanup EXIT

    $SUDO apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "$NGINX_PKG" haproxy

    cleanup
    ADDED_POLICY=
fi

# Whatever happened before this script (an install without policy-rc.d, a
# reboot), make sure the system services are not running or starting at boot.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now nginx.service haproxy.service >/dev/null 2>&1 || true
else
    for svc in nginx haproxy; do
        if [ -x "/etc/init.d/$svc" ]; then
            $SUDO "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
        fi
    done
fi

PATH="$PATH:/usr/sbin:/sbin"
nginx -v 2>&1
haproxy -v 2>&1 | head -n 1
