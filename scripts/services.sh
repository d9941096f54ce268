#!/usr/bin/env bash
# Starts the local servers haul's tests use, when they are not running yet:
# PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`) and MariaDB on
# 127.0.0.1:3306 (root without password, database `test`), Redis on
# 127.0.0.1:6379 (nothing kept on disk), RabbitMQ on 127.0.0.1:5672
# (guest/guest), and ZooKeeper on 127.0.0.1:2181 (installed from Debian's
# `zookeeperd` when missing).
set -euo pipefail

wait_for() { # name, command...
  local name=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "services: $name did not become ready" >&2
  return 1
}

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  wait_for PostgreSQL pg_isready -h 127.0.0.1 -p 5432 -q
fi
if ! psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null 2>&1; then
  psql -h 127.0.0.1 -U postgres -d postgres -c 'create database test' >/dev/null
fi

if ! mysqladmin -h 127.0.0.1 -u root ping >/dev/null 2>&1; then
  echo "services: starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  wait_for MariaDB mysqladmin -h 127.0.0.1 -u root ping
fi
mysql -h 127.0.0.1 -u root -e 'create database if not exists test'

# A port of 127.0.0.1 that accepts a connection.
port_answers() { timeout 2 bash -c ": <>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

if ! port_answers 6379; then
  echo "services: starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  wait_for Redis redis-cli -h 127.0.0.1 -p 6379 ping
fi

if ! port_answers 5672; then
  echo "services: starting RabbitMQ"
  rabbitmq-server -detached </dev/null >/dev/null 2>&1
  wait_for RabbitMQ port_answers 5672
  rabbitmqctl await_startup </dev/null >/dev/null
fi

# The client port accepting a connection is what the tests need; the
# four-letter `ruok` may be off (4lw whitelist), so no reply is asked for.
zk_server=/usr/share/zookeeper/bin/zkServer.sh
zk_config="$(cd "$(dirname "$0")" && pwd)/zookeeper.cfg"
if ! port_answers 2181; then
  if [ ! -x "$zk_server" ]; then
    echo "services: installing ZooKeeper (zookeeperd)"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine may have no package lists yet: update only then.
    if ! apt-get install -y -q zookeeperd </dev/null; then
      apt-get update -q </dev/null
      apt-get install -y -q zookeeperd </dev/null
    fi
  fi
  echo "services: starting ZooKeeper"
  "$zk_server" start "$zk_config" </dev/null >/dev/null 2>&1
  # `status` asks the server for its mode (`srvr`), so it passes once it serves.
  wait_for ZooKeeper "$zk_server" status "$zk_config"
fi
echo "services: PostgreSQL, MariaDB, Redis, RabbitMQ and ZooKeeper (127.0.0.1:2181) are ready"
