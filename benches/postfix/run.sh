#!/usr/bin/env bash
# S1 through Debian's Postfix, for comparison with Postern in the same
# session: a private Postfix instance (its own configuration, queue and
# log under a temporary directory, listening on a free loopback port)
# relays to postern-bench's sinks through a transport map, and
# postern-bench loads it with --target. Nothing of the system's Postfix
# configuration is read or changed; the instance is stopped, and its
# master process ended by PID, on exit.
#
#   benches/postfix/run.sh [postern-bench options]   # default: --scenario s1
#
# Needs root (Postfix's master runs as root and drops to the postfix user).
set -euo pipefail
cd "$(dirname "$0")/../.."

bench=target/release/postern-bench
[ -x "$bench" ] || cargo build --release -p postern-benches --bin postern-bench

if ! command -v postfix >/dev/null; then
  echo "postfix main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
fi

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
listen=$(free_port)
sinks=$(free_port)
hosts=5
domains=50

dir=$(mktemp -d /tmp/postern-postfix.XXXXXX)
etc="$dir/etc"
chmod 755 "$dir"
mkdir -p "$etc" "$dir/queue" "$dir/data"
chown postfix "$dir/data"

# Domain d{k}.bench goes to sink host k mod 5, as its MX does in the
# harness's DNS.
for ((k = 0; k < domains; k++)); do
  printf 'd%d.bench smtp:[127.0.1.%d]:%d\n' "$k" $((10 + k % hosts)) "$sinks"
done > "$etc/transport"

cat > "$etc/main.cf" <<CONF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench-postfix.test
mydestination =
relay_domains =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
transport_maps = texthash:$etc/transport
smtp_dns_support_level = disabled
maillog_file_prefixes = $dir
maillog_file = $dir/data/maillog
default_destination_concurrency_limit = 20
CONF
cp /usr/share/postfix/master.cf.dist "$etc/master.cf"
# Listen on the free port, without chroot (the instance has no chroot tree).
sed -i "s/^smtp      inet/127.0.0.1:$listen inet/" "$etc/master.cf"
postconf -c "$etc" -F '*/*/chroot = n'
postconf -c "$etc" -M 'postlog/unix-dgram=postlog unix-dgram n - n - 1 postlogd'

stop() {
  postfix -c "$etc" stop >/dev/null 2>&1 || true
  if [ -f "$dir/queue/pid/master.pid" ]; then
    pid=$(tr -d ' ' < "$dir/queue/pid/master.pid")
    kill "$pid" 2>/dev/null || true
  fi
  [ -n "${KEEP:-}" ] || rm -rf "$dir"
}
trap stop EXIT
echo "postfix instance in $dir" >&2

postfix -c "$etc" check || { cat "$dir/data/maillog" 2>/dev/null; exit 1; }
postfix -c "$etc" start
for _ in $(seq 50); do
  (echo > "/dev/tcp/127.0.0.1/$listen") 2>/dev/null && break
  sleep 0.2
done

args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--scenario s1)
"$bench" --target "127.0.0.1:$listen" --sink-port "$sinks" --hosts "$hosts" --domains "$domains" "${args[@]}"
