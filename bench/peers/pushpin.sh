#!/bin/bash
# pushpin.sh start DIR PORT | stop DIR — Pushpin on 127.0.0.1:PORT in front of the simplest
# real origin: an nginx server on PORT+1 that answers every request with a GRIP hold
# (Grip-Hold: response, Grip-Channel: bench). Pushpin's HTTP publish API is on PORT+2
# (POST /publish/). Its ZeroMQ sockets use PORT+3..PORT+5; runtime files stay in DIR.
# STATUS: NOT WORKING, not called by run.sh (docs/PERFORMANCE.md): the proxy answers every
# request with 502 ("GET http://bench/lp -> 127.0.0.1:PORT+1 code=502" in log/pushpin-proxy.log)
# although the origin answers correctly when asked directly.
# Prints the pid of pushpin-handler (the process that fans messages out; condure and
# pushpin-proxy are separate processes not counted in herald-bench's CPU/RSS figure).
. "$(dirname "$0")/lib.sh"
set -e
cmd=$1 dir=$2 port=${3:-18486}
case $cmd in
start)
  mkdir -p "$dir/run" "$dir/log"
  cat >"$dir/origin.conf" <<CONF
worker_processes 1;
daemon off;
pid $dir/origin.pid;
error_log $dir/origin-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/body; proxy_temp_path $dir/proxy; fastcgi_temp_path $dir/fcgi;
  uwsgi_temp_path $dir/uwsgi; scgi_temp_path $dir/scgi;
  server {
    listen 127.0.0.1:$((port + 1));
    keepalive_requests 1000000;
    location / {
      add_header Grip-Hold response;
      add_header Grip-Channel bench;
      add_header Grip-Timeout 60;
      return 200 "";
    }
  }
}
CONF
  nginx -p "$dir" -c "$dir/origin.conf" >"$dir/origin.log" 2>&1 &
  echo "* 127.0.0.1:$((port + 1))" >"$dir/routes"
  sed -e "s#^rundir=.*#rundir=$dir/run#" -e "s#^logdir=.*#logdir=$dir/log#" \
      -e "s#^http_port=.*#http_port=127.0.0.1:$port#" \
      -e "s#^routesfile=.*#routesfile=$dir/routes#" \
      -e "s#^push_in_spec=.*#push_in_spec=tcp://127.0.0.1:$((port + 3))#" \
      -e "s#^push_in_sub_specs=.*#push_in_sub_specs=tcp://127.0.0.1:$((port + 4))#" \
      -e "s#^command_spec=.*#command_spec=tcp://127.0.0.1:$((port + 5))#" \
      -e "s#^push_in_http_port=.*#push_in_http_port=$((port + 2))#" \
      -e "s#^message_rate=.*#message_rate=1000000#" -e "s#^message_hwm=.*#message_hwm=1000000#" \
      -e "s#^updates_check=.*#updates_check=off#" \
      -e "s#^services=.*#services=condure,zurl,pushpin-proxy,pushpin-handler#" \
      /etc/pushpin/pushpin.conf >"$dir/pushpin.conf"
  ulimit -n "$(ulimit -Hn)"
  pushpin --config "$dir/pushpin.conf" >"$dir/pushpin.log" 2>&1 &
  echo $! >"$dir/pushpin.pid"
  wait_port "$port"
  wait_port $((port + 2))
  sleep 0.5
  pgrep -f "pushpin-handler.*$dir" | head -1 || cat "$dir/pushpin.pid"
  ;;
stop)
  stop_pidfile "$dir/pushpin.pid"
  stop_pidfile "$dir/origin.pid"
  ;;
esac
