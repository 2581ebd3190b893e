#!/usr/bin/env bash
# Makes sure RabbitMQ listens on 127.0.0.1:5672: installs it (Debian) and starts it when needed.
set -euo pipefail

listening() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

if listening; then
  echo "rabbitmq: already listening on 127.0.0.1:5672"
  exit 0
fi
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "rabbitmq: installing rabbitmq-server (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q rabbitmq-server
fi
echo "rabbitmq: starting"
rabbitmq-server -detached
for _ in $(seq 1 120); do
  if listening; then
    echo "rabbitmq: up"
    exit 0
  fi
  sleep 0.5
done
echo "rabbitmq: did not start listening on 127.0.0.1:5672 within 60s; see /var/log/rabbitmq" >&2
exit 1
