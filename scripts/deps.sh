#!/usr/bin/env bash
# Installs what the tests and the demo need on a Debian machine: unbound (the
# validating resolver of the test bed), iproute2 (loopback inside the
# tests' network namespaces), postfix, whose posttls-finger is the
# independent DANE implementation of dane_diff_test.go, prometheus for its
# promtool, which checks the alert rules of examples/monitoring, and
# redis-server, the shared store of a fleet of nodes (docs/fleet.md; the
# tests start their own servers on loopback through internal/testbed/redisbed).
# Go modules come through the module proxy.
set -euo pipefail
missing=()
command -v unbound >/dev/null 2>&1 || missing+=(unbound)
command -v unbound-control >/dev/null 2>&1 || missing+=(unbound)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v posttls-finger >/dev/null 2>&1 || [ -x /usr/sbin/posttls-finger ] || missing+=(postfix)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if ((${#missing[@]})); then
	if [ "$(id -u)" != 0 ]; then
		echo "deps: please install as root: apt-get install ${missing[*]}" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	# Postfix is wanted for its client tool only: "No configuration" leaves
	# /etc/postfix/main.cf absent, so the package sets up no mail system and
	# its init script refuses to start a daemon (nothing listens on port 25).
	echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Should a postfix master run anyway (a machine configured before), it is
# the host's; the tests bind 127.0.0.x:25 only inside their own network
# namespaces, so it cannot take their port or their connections.
# Debian starts the unbound, redis-server and prometheus services on install
# where an init system runs; the tests start their own resolvers (port 53
# only inside their namespaces) and Redis servers (on a free loopback port),
# and only promtool of prometheus is used, so host services are harmless.
go mod download
