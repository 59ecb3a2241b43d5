# Shared helpers for scripts/*: sourced, not run.
# Installs what the build needs from Debian's packages when it is missing.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD="$ROOT/build"
# The embedded interpreter is the system python3 (Debian 3.11, libpython3.11).
export PYO3_PYTHON=${PYO3_PYTHON:-/usr/bin/python3}

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# apt_need PKG...: install the Debian packages that are not installed yet.
apt_need() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get: install them by hand"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if [ ! -f "$BUILD/.apt-updated" ]; then
        $sudo apt-get update -qq || die "apt-get update failed"
        mkdir -p "$BUILD" && touch "$BUILD/.apt-updated"
    fi
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
}

BUILD_DEPS=(build-essential pkg-config libpcre2-dev libssl-dev zlib1g-dev libclang-dev clang
            python3 python3-dev python3-venv)

need_cargo() {
    command -v cargo >/dev/null || [ -x "$HOME/.cargo/bin/cargo" ] \
        || die "cargo not found: install a Rust toolchain (1.81 or newer) with rustup"
    command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
}

# nginx's workers run as "nobody" when nginx is started as root. Can they
# reach PATH? (A checkout under a 0700 directory, such as one made by
# mktemp -d or a home directory, is out of their reach.)
nobody_can_read() {
    [ "$(id -u)" -ne 0 ] && return 0
    runuser -u nobody -- test -r "$1" 2>/dev/null
}

# A directory for files the workers must read, outside the checkout when
# the checkout is out of their reach.
worker_readable_dir() {
    local name=$1
    if nobody_can_read "$ROOT/t/requirements.txt"; then
        echo "$BUILD/$name"
    else
        echo "/var/tmp/ngx-wsgi-$(printf %s "$ROOT" | md5sum | cut -c1-8)/$name"
    fi
}
