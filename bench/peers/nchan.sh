#!/bin/bash
# nchan.sh start DIR PORT | stop DIR — nginx + Nchan on 127.0.0.1:PORT, one worker (Herald runs
# one event loop), config and temp files in DIR. /sub/CH: long-poll subscriber, /pub/CH:
# publisher of channel CH (herald-bench uses a new channel per run); a channel keeps the last 10,000 messages for 10 minutes.
. "$(dirname "$0")/lib.sh"
set -e
cmd=$1 dir=$2 port=${3:-18480}
case $cmd in
start)
  mkdir -p "$dir"
  cat >"$dir/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 19000; }
http {
  access_log off;
  client_body_temp_path $dir/body; proxy_temp_path $dir/proxy; fastcgi_temp_path $dir/fcgi;
  uwsgi_temp_path $dir/uwsgi; scgi_temp_path $dir/scgi;
  nchan_max_reserved_memory 256M;
  server {
    listen 127.0.0.1:$port backlog=4096;
    keepalive_requests 1000000;
    location ~ ^/sub/(\w+)$ { nchan_subscriber longpoll; nchan_channel_id \$1;
                      nchan_subscriber_timeout 60s; }
    location ~ ^/pub/(\w+)$ { nchan_publisher; nchan_channel_id \$1;
                      nchan_message_buffer_length 10000; nchan_message_timeout 10m; }
  }
}
CONF
  ulimit -n "$(ulimit -Hn)"
  nginx -p "$dir" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
  wait_port "$port"
  sleep 0.3
  # the worker does the work: report its pid
  pgrep -P "$(cat "$dir/nginx.pid")" | head -1
  ;;
stop) stop_pidfile "$dir/nginx.pid" ;;
esac
