#!/usr/bin/env bash
# Installs what the tests and the demo need on a Debian machine: unbound (the
# validating resolver of the test bed) and iproute2 (loopback inside the
# tests' network namespaces). Go modules come through the module proxy.
set -euo pipefail
missing=()
command -v unbound >/dev/null 2>&1 || missing+=(unbound)
command -v unbound-control >/dev/null 2>&1 || missing+=(unbound)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if ((${#missing[@]})); then
	if [ "$(id -u)" != 0 ]; then
		echo "deps: please install as root: apt-get install ${missing[*]}" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts the unbound service on install where an init system runs;
# the tests start their own resolvers and need port 53 free only inside
# their namespaces, so a host service is harmless.
go mod download
