#!/usr/bin/env bash
# Installs the system packages the service, the tests and the demo need, when missing:
# PostgreSQL (server binaries), Prometheus and Alertmanager (Debian's packages), Chromium
# and its driver for the console's browser tests (with fonts, so text renders); with
# --with-bench wrk and pgbench; with --with-topology Patroni, etcd and PgBouncer (the
# tests/topology servers: failover and connection pooling). Options combine.
# Safe to run repeatedly; does nothing when everything is there.
set -euo pipefail

need=()
have_pg() { command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; }
have_pg || need+=(postgresql)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
[ -d /usr/share/fonts/truetype/liberation ] || need+=(fonts-liberation)
for opt in "$@"; do
  case "$opt" in
    --with-bench)
      command -v wrk >/dev/null 2>&1 || need+=(wrk)
      command -v pgbench >/dev/null 2>&1 || need+=(postgresql-contrib)
      ;;
    --with-topology)
      command -v patroni >/dev/null 2>&1 || need+=(patroni)
      command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
      command -v pgbouncer >/dev/null 2>&1 || need+=(pgbouncer)
      ;;
    *) echo "unknown option: $opt (--with-bench, --with-topology)" >&2; exit 2 ;;
  esac
done
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing system packages: ${need[*]}; install them with your package manager" >&2
  exit 1
fi
echo "installing system packages: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# policy-rc.d keeps the packages from starting their own daemons: the tests and the demo
# start private instances on 127.0.0.1 instead.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
