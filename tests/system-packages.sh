#!/usr/bin/env bash
# The Debian packages the tests use as real servers, installed when missing:
# PostgreSQL's server programs (tests/test_team.py starts a cluster of its own on 127.0.0.1),
# Chromium (tests/test_webapp.py drives the web page in it through Playwright), and for the hosts
# of tests/test_hosts.py (network namespaces) iproute2 (ip, ss), util-linux (unshare) and
# OpenSSH's server (the DVC remote on the server host).
set -euo pipefail
missing=()
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
if ! command -v chromium >/dev/null 2>&1 && [ -z "${CHROMIUM:-}" ]; then
  missing+=(chromium)
fi
command -v ip >/dev/null 2>&1 && command -v ss >/dev/null 2>&1 || missing+=(iproute2)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "error: install ${missing[*]} (Debian packages) as root first" >&2; exit 1; }
  sudo=sudo
fi
echo "installing Debian packages: ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
