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

# nginx's workers run as "nobody" when nginx is started as root, or as
# WORKER_USER (scripts/test --worker-user: "user www-data;"). Can they reach
# PATH? (A checkout under a 0700 directory, such as one made by mktemp -d or
# a home directory, is out of their reach.)
nobody_can_read() {
    [ "$(id -u)" -ne 0 ] && return 0
    runuser -u "${WORKER_USER:-nobody}" -- test -r "$1" 2>/dev/null
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

# --- choosing the Python and the nginx of a build --------------------------

# nginx's configure options in the vendored build (the nginx-src crate's
# NGINX_CONFIGURE_BASE, see `build/sbin/nginx -V`); scripts/build
# --nginx-source configures other versions with the same, plus
# --with-http_v3_module from 1.25.0 on (as .cargo/config.toml's
# NGX_CONFIGURE_ARGS adds it to the vendored build).
NGINX_CONFIGURE_FLAGS=(--with-compat --with-http_realip_module --with-http_ssl_module
                       --with-http_v2_module --with-stream --with-stream_realip_module
                       --with-stream_ssl_module --with-threads)

# The NGX_CONFIGURE_ARGS of .cargo/config.toml's [env] (--with-http_v3_module):
# what the vendored build adds to NGINX_CONFIGURE_BASE.
cargo_config_configure_args() {
    sed -n 's/^NGX_CONFIGURE_ARGS *= *"\(.*\)"/\1/p' "$ROOT/.cargo/config.toml"
}

# version_ge A B: is version A (1.25.0) at least B?
version_ge() {
    [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]
}

# The nginx version of the nginx-src crate the vendored build uses (1.28.3).
vendored_nginx_version() {
    sed -n '/^name = "nginx-src"/{n;s/^version = ".*+\(.*\)"/\1/p}' "$ROOT/Cargo.lock"
}

pyenv_root() {
    if command -v pyenv >/dev/null; then pyenv root
    elif [ -x "$HOME/.pyenv/bin/pyenv" ]; then "$HOME/.pyenv/bin/pyenv" root
    else echo "${PYENV_ROOT:-$HOME/.pyenv}"; fi
}

# resolve_python SPEC: the interpreter for a path or a version ("3.13"):
# /usr/bin/python3.X (as /usr/bin/python3 when that is the same), else the
# newest pyenv 3.X.*, else python3.X on PATH. Prints nothing if not found.
resolve_python() {
    local spec=$1 p=""
    case "$spec" in
        */*)
            [ -x "$spec" ] && p=$(cd "$(dirname "$spec")" && echo "$PWD/$(basename "$spec")") ;;
        3.[0-9]*)
            if [ -x "/usr/bin/python$spec" ]; then
                p=/usr/bin/python$spec
                [ "$(readlink -f /usr/bin/python3)" = "$(readlink -f "$p")" ] && p=/usr/bin/python3
            else
                # pyenv names a free-threaded 3.14t "3.14.0t"
                local d base=${spec%t} ft=${spec#"${spec%t}"}
                d=$(ls -d "$(pyenv_root)/versions/$base".*"$ft" 2>/dev/null | grep -E "/$base\.[0-9]+$ft\$" \
                    | sort -V | tail -1)
                if [ -n "$d" ] && [ -x "$d/bin/python$spec" ]; then
                    p=$d/bin/python$spec
                elif command -v "python$spec" >/dev/null; then
                    p=$(command -v "python$spec")
                fi
            fi ;;
    esac
    [ -n "$p" ] && echo "$p"
    return 0
}

# python_version PY: "3.13" (with full=1: "3.13.0"); a free-threaded
# build ends in "t" ("3.14t", "3.14.0t"), as its lib/python3.14t does, so
# that its build directory and test venv are not the GIL build's.
python_version() {
    "$1" -c 'import sys; print(("%d.%d" % sys.version_info[:2] if len(sys.argv) < 2 else "%d.%d.%d" % sys.version_info[:3]) + ("t" if "t" in getattr(sys, "abiflags", "") else ""))' \
        ${2:+full}
}

# python_free_threaded PY: 1 for a free-threaded build (--disable-gil:
# sysconfig's Py_GIL_DISABLED), else 0.
python_free_threaded() {
    "$1" -c 'import sysconfig; print(1 if sysconfig.get_config_var("Py_GIL_DISABLED") else 0)' 2>/dev/null \
        || echo 0
}

# The directory a pair's build goes to: build/ for the default pair (Debian's
# python3 and the vendored nginx), build/system for Debian's python3 with
# --system-nginx, else build/matrix/py<X.Y>-nginx<version>[-system].
pair_dir() {
    local python=$1 nginx_version=$2 kind=$3   # kind: vendored, source, system
    local default=no
    [ "$(readlink -f "$python")" = "$(readlink -f /usr/bin/python3)" ] && default=yes
    if [ $default = yes ] && [ "$kind" = vendored ]; then
        echo "$BUILD"
    elif [ $default = yes ] && [ "$kind" = system ]; then
        echo "$BUILD/system"
    else
        local suffix=""
        [ "$kind" = system ] && suffix=-system
        echo "$BUILD/matrix/py$(python_version "$python")-nginx$nginx_version$suffix"
    fi
}

# Can nginx's workers (nobody, when run as root) read this Python's standard
# library? A pyenv Python under /root (0700) cannot be.
python_readable_by_workers() {
    local stdlib
    stdlib=$("$1" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
    nobody_can_read "$stdlib/encodings/__init__.py"
}

# copy_into_root DEST: the checkout's files (tracked, and untracked ones git
# does not ignore), as they are in the work tree, into DEST; what DEST had
# besides its build/ and target/ is replaced.
copy_into_root() {
    local dest=$1
    mkdir -p "$dest"
    find "$dest" -mindepth 1 -maxdepth 1 ! -name build ! -name target -exec rm -rf {} +
    if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
            | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
            | tar --null -T - -cf -) | tar -xf - -C "$dest"
    else
        (cd "$ROOT" && tar --exclude=./build --exclude=./target -cf - .) | tar -xf - -C "$dest"
    fi
    chmod a+rX "$dest"
}

# run_in_root SCRIPT SUITE PYTHON ARGS...: reruns scripts/SCRIPT inside the
# Debian root SUITE (scripts/root), on a copy of the checkout (/ngx-wsgi),
# with the root's Python PYTHON (a version such as 3.15, or "" for the
# root's python3) and the vendored nginx built there: how scripts/soak and
# scripts/memcheck run on a suite's newest Python.
run_in_root() {
    local script=$1 suite=$2 py=$3
    shift 3
    "$ROOT/scripts/root" "$suite"
    copy_into_root "$BUILD/roots/$suite/ngx-wsgi"
    local python=/usr/bin/python3
    [ -n "$py" ] && python=/usr/bin/python$py
    exec "$ROOT/scripts/root" "$suite" --quiet -- env PYO3_PYTHON="$python" \
        /ngx-wsgi/scripts/"$script" "$@"
}

# take_root_args: sets root_suite, root_python and rest_args from "$@"
# (--root SUITE, --python 3.X; everything else is kept in order).
take_root_args() {
    root_suite="" root_python="" rest_args=()
    while [ $# -gt 0 ]; do
        case $1 in
            --root) [ $# -ge 2 ] || die "--root needs a suite"; root_suite=$2; shift 2 ;;
            --root=*) root_suite=${1#*=}; shift ;;
            --python) [ $# -ge 2 ] || die "--python needs a version"; root_python=$2; shift 2 ;;
            --python=*) root_python=${1#*=}; shift ;;
            *) rest_args+=("$1"); shift ;;
        esac
    done
    if [ -n "$root_python" ] && [ -z "$root_suite" ]; then
        die "--python goes with --root SUITE here (the default pair's Python is Debian's python3)"
    fi
    return 0
}
