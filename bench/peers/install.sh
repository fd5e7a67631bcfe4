#!/bin/sh
# Install the peers herald-bench is compared with, from Debian 12's own packages. The package
# scripts may start system services; bench/peers/*.sh never use them (each starts its own binary
# on a private config and non-default loopback ports), so we stop any that came up.
set -e
need=""
for p in nginx-light libnginx-mod-nchan pushpin mosquitto nats-server gnuplot-nox; do
  dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
if [ -n "$need" ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need
fi
