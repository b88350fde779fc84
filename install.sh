#!/usr/bin/env bash
# Install tinystack on Debian or Ubuntu and start it.
#
#   ./install.sh [--no-start] [tinystack up flags...]
#
# Installs the system packages tinystack's services use (QEMU, Linux
# networking tools, busybox for the guest image, ...), makes .venv in this
# checkout with tinystack installed editable, then runs `tinystack up -d` with
# the flags given. Run it as root (or as a user with sudo for the packages).
# Running it again is quick: it skips apt when every package is installed and
# pip when .venv already holds this version of the project.
#
#   --no-start   only install
#   PYTHON=...   the Python to make .venv with (default: python3, 3.11 or newer)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

PACKAGES=(
    python3 python3-venv python3-dev build-essential
    qemu-system-x86 qemu-utils
    iproute2 dnsmasq-base nftables iptables
    busybox-static cpio genisoimage xorriso
    e2fsprogs openssh-client
)

start=1
up_args=()
for arg in "$@"; do
    case "$arg" in
        --no-start) start=0 ;;
        -h|--help) sed -n '2,15s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) up_args+=("$arg") ;;
    esac
done

say() { printf 'install: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "installing system packages needs root: run as root or install sudo"
    fi
}

install_system_packages() {
    command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
        || die "this installer knows Debian and Ubuntu (apt); install these by hand: ${PACKAGES[*]}"
    local missing=() package
    for package in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$package")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        say "system packages: all there"
        return
    fi
    say "system packages: installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    local available=()
    for package in "${missing[@]}"; do
        if apt-cache show "$package" >/dev/null 2>&1; then
            available+=("$package")
        else
            say "warning: this distribution has no package $package; skipping it"
        fi
    done
    if [ "${#available[@]}" -gt 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends -o Dpkg::Use-Pty=0 "${available[@]}" >/dev/null
    fi
}

python_ok() {
    "$1" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

make_venv() {
    if [ -x .venv/bin/python ] && python_ok .venv/bin/python; then
        return
    fi
    local python="${PYTHON:-python3}"
    python_ok "$python" || python="/usr/bin/python3"
    python_ok "$python" || die "tinystack needs Python 3.11 or newer with venv; set PYTHON=..."
    if [ -e .venv ]; then
        say "virtualenv: .venv does not work; making it again"
        rm -rf .venv
    fi
    say "virtualenv: making .venv with $("$python" --version 2>&1)"
    "$python" -m venv .venv
}

# What pip installed is current when this stamp matches: the project file, the
# Python and the checkout's place, and the installed tinystack has this version.
install_stamp() {
    {
        sha256sum pyproject.toml
        .venv/bin/python -c 'import sys; print(sys.version)'
        pwd
    } | sha256sum | cut -d' ' -f1
}

project_version() {
    sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -n1
}

installed_version() {
    .venv/bin/python -c 'import importlib.metadata as m; print(m.version("tinystack"))' 2>/dev/null || true
}

install_python_packages() {
    local stamp_file=.venv/.tinystack-install stamp
    stamp="$(install_stamp)"
    if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ] \
        && [ -x .venv/bin/tinystack ] && [ "$(installed_version)" = "$(project_version)" ]; then
        say "python packages: up to date"
        return
    fi
    say "python packages: installing tinystack and its test tools into .venv"
    local log=.venv/pip-install.log
    if ! PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
        .venv/bin/python -m pip install -e '.[test]' >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        die "pip install failed; the whole output is in $log"
    fi
    echo "$stamp" > "$stamp_file"
}

install_system_packages
make_venv
install_python_packages

if [ "$start" -eq 1 ]; then
    exec .venv/bin/tinystack up -d ${up_args[@]+"${up_args[@]}"}
fi
say "installed; start it with .venv/bin/tinystack up -d"
