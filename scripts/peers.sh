#!/usr/bin/env bash
# The Debian packages relayguard's tests talk to (Postfix "Local only" and never left running, swaks, nmap, dig,
# rbldnsd, dnsperf, aiosmtpd, strace, openssl, fail2ban-regex, PostgreSQL 15, HAProxy 2.6, chromium (browser tests),
# BIND/NSD/Knot (DNS secondaries and audit zones), squid/tinyproxy/dante (open proxy tests), INN 2 (open NNTP tests)
# (tests start private instances; no system service is ever started): installs the missing ones when run as root
# (idempotent: nothing to do is a no-op), otherwise stops at once with the one command that installs them.
# `npm test` runs it first; `.ci/run` runs it too. `scripts/peers.sh --list` prints the package names.
set -euo pipefail

PACKAGES=(postfix swaks nmap bind9-dnsutils bind9-utils rbldnsd dnsperf python3-aiosmtpd strace openssl ca-certificates fail2ban postgresql-15 haproxy
  chromium fonts-dejavu-core bind9 nsd knot squid tinyproxy dante-server inn2-inews inn2)
APT_LOCK_WAIT_SECONDS=300

if [ "${1:-}" = "--list" ]; then printf '%s\n' "${PACKAGES[@]}"; exit 0; fi

log() { printf '+++ %s\n' "$*" >&2; }

missing_packages() {
  local p
  for p in "${PACKAGES[@]}"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ] || printf '%s\n' "$p"
  done
}

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "relayguard tests: this is not a Debian-based machine; install these packages (or their equivalents) first: ${PACKAGES[*]}" >&2
  exit 1
fi

mapfile -t MISSING < <(missing_packages)
[ "${#MISSING[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "relayguard tests need these Debian packages: ${MISSING[*]}" >&2
  echo "install them once with:  sudo $(cd "$(dirname "$0")" && pwd)/peers.sh" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
export NEEDRESTART_MODE=a

# apt-get with retries while another apt/dpkg holds the lock (unattended-upgrades on a fresh VM, say).
apt_get() {
  local deadline=$((SECONDS + APT_LOCK_WAIT_SECONDS)) out rc
  out=$(mktemp)
  while :; do
    log "apt-get $*"
    set +e
    apt-get -o DPkg::Lock::Timeout=30 "$@" 2>&1 | tee "$out" >&2
    rc=${PIPESTATUS[0]}
    set -e
    if [ "$rc" -eq 0 ]; then rm -f "$out"; return 0; fi
    if grep -qE 'Could not get lock|Unable to acquire the dpkg frontend lock|Unable to lock( the)? (directory|administration)|is another process using it' "$out" \
        && [ "$SECONDS" -lt "$deadline" ]; then
      log "apt/dpkg lock is held by another process; retrying in 10 s"
      sleep 10
      continue
    fi
    rm -f "$out"
    return "$rc"
  done
}

postfix_running() { command -v postfix >/dev/null 2>&1 && postfix status >/dev/null 2>&1; }
fail2ban_running() { command -v fail2ban-client >/dev/null 2>&1 && fail2ban-client ping >/dev/null 2>&1; }
postgres_running() { pgrep -x postgres >/dev/null 2>&1; }
haproxy_running() { pgrep -x haproxy >/dev/null 2>&1; }

log "installing Debian packages: ${MISSING[*]}"
WORK=$(mktemp -d)
CREATED_POLICY_RC=
cleanup() {
  rm -rf "$WORK"
  if [ -n "$CREATED_POLICY_RC" ]; then rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

# Never let apt start daemons (postfix, fail2ban) on this machine. Most CI images already ship this file.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  log "creating a temporary /usr/sbin/policy-rc.d (exit 101) so apt starts no services"
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  CREATED_POLICY_RC=1
fi
POSTFIX_WAS_RUNNING=
if postfix_running; then POSTFIX_WAS_RUNNING=1; fi
FAIL2BAN_WAS_RUNNING=
if fail2ban_running; then FAIL2BAN_WAS_RUNNING=1; fi
POSTGRES_WAS_RUNNING=
if postgres_running; then POSTGRES_WAS_RUNNING=1; fi
HAPROXY_WAS_RUNNING=
if haproxy_running; then HAPROXY_WAS_RUNNING=1; fi
# Daemons of the other peers (BIND, NSD, Knot, squid, tinyproxy, dante): tests start private instances; a
# system instance that the install started (policy-rc.d missing or ignored) is stopped again.
OTHER_DAEMONS=(named nsd knotd squid tinyproxy danted innd nnrpd)
declare -A DAEMON_WAS_RUNNING=()
for d in "${OTHER_DAEMONS[@]}"; do if pgrep -x "$d" >/dev/null 2>&1; then DAEMON_WAS_RUNNING[$d]=1; fi; done

# Postfix "Local only", loopback, IPv4 (/work/shared/peers.md section 0).
cat > "$WORK/postfix.preseed" <<'PRESEED'
postfix postfix/main_mailer_type select Local only
postfix postfix/mailname string peers.test
postfix postfix/destinations string peers.test, localhost
postfix postfix/protocols select ipv4
PRESEED
debconf-set-selections "$WORK/postfix.preseed"

if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
  apt_get update
fi
# INN 2: inn2's postinst runs innconfval, which fails ("hostname does not resolve or domain not set in inn.conf")
# on a machine whose host name has no domain (CI containers, this VM). /etc/news/inn.conf is a conffile of
# inn2-inews, which has no maintainer scripts: install it first, give inn.conf a domain, then inn2 configures.
# (Tests run private innd instances with their own inn.conf; this only makes the package installable.)
if printf '%s\n' "${MISSING[@]}" | grep -qx 'inn2'; then
  if printf '%s\n' "${MISSING[@]}" | grep -qx 'inn2-inews'; then
    apt_get install -y inn2-inews || { apt_get update; apt_get install -y inn2-inews; }
  fi
  if [ -f /etc/news/inn.conf ] && ! grep -qE '^domain:[[:space:]]*[^[:space:]]' /etc/news/inn.conf \
      && ! hostname --fqdn 2>/dev/null | grep -q '\.'; then
    log "setting domain: peers.test in /etc/news/inn.conf (the host name has no domain)"
    sed -i 's/^#domain:.*$/domain:                      peers.test/' /etc/news/inn.conf
    grep -qE '^domain:' /etc/news/inn.conf || printf 'domain:                      peers.test\n' >> /etc/news/inn.conf
  fi
fi
if ! apt_get install -y "${MISSING[@]}"; then
  log "install failed; refreshing the package lists and trying again"
  apt_get update
  apt_get install -y "${MISSING[@]}"
fi

if [ -z "$POSTFIX_WAS_RUNNING" ] && postfix_running; then postfix stop >&2 || true; fi
if [ -z "$FAIL2BAN_WAS_RUNNING" ] && fail2ban_running; then fail2ban-client stop >&2 || true; fi
if [ -z "$POSTGRES_WAS_RUNNING" ] && postgres_running && command -v pg_ctlcluster >/dev/null 2>&1; then pg_ctlcluster 15 main stop >&2 || true; fi
if [ -z "$HAPROXY_WAS_RUNNING" ] && haproxy_running && command -v service >/dev/null 2>&1; then service haproxy stop >&2 || true; fi
for d in "${OTHER_DAEMONS[@]}"; do
  if [ -z "${DAEMON_WAS_RUNNING[$d]:-}" ] && pgrep -x "$d" >/dev/null 2>&1; then
    log "stopping the system $d that the install started"
    pkill -x "$d" >&2 || true
  fi
done
log "Debian packages installed"
