#!/bin/sh
# Install the peers herald-bench is compared with, from Debian 12's own packages, and gnuplot
# for the latency plots. bench/peers/*.sh never use the packages' system services (each starts
# its own binaries on a private config and non-default loopback ports), so the install runs with
# a policy-rc.d that keeps invoke-rc.d from starting any (pushpin, zurl, nginx, mosquitto would
# otherwise come up on their default ports, some on every address).
set -e
need=""
for p in nginx-light libnginx-mod-nchan pushpin zurl mosquitto nats-server gnuplot-nox; do
  dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
# Pushpin's origin in the bench (bench/peers/grip_origin.js) runs on node
command -v node >/dev/null 2>&1 || need="$need nodejs"
if [ -n "$need" ]; then
  policy=/usr/sbin/policy-rc.d
  ours=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    ours=1
    trap 'rm -f "$policy"' EXIT INT TERM
  fi
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need
  [ -n "$ours" ] && rm -f "$policy"
fi
exit 0
