# Shared set-up for scripts/run and scripts/test: sourced, not executed.
# Creates .venv with the project installed (editable) and, for tests, the Debian peers.

ACD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ACD_ROOT/.venv"

die() { echo "acd: $*" >&2; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }

find_python() {
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

apt_install() {
    # apt_install PKG...: install Debian packages that are missing; as root only.
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! is_root; then
        die "missing Debian packages: ${missing[*]}
run this once as root, then try again:
  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
    fi
    echo "acd: installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_venv() {
    # ensure_venv [EXTRA]: .venv exists and has the project (with EXTRA, e.g. dev) installed,
    # reinstalling only when pyproject.toml changed.
    local extra="${1:-}"
    local py
    if ! py="$(find_python)"; then
        if command -v apt-get >/dev/null 2>&1 && is_root; then
            apt_install python3 python3-venv python3-dev
            py="$(find_python)" || die "Python 3.11 or newer is required"
        else
            die "Python 3.11 or newer is required (Debian: apt-get install python3 python3-venv)"
        fi
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        if ! "$py" -m venv "$VENV" 2>/dev/null; then
            if command -v apt-get >/dev/null 2>&1 && is_root; then
                apt_install python3-venv
                rm -rf "$VENV"
                "$py" -m venv "$VENV" || die "cannot create $VENV"
            else
                die "cannot create a virtual environment: apt-get install python3-venv"
            fi
        fi
    fi
    local spec="."
    [ -n "$extra" ] && spec=".[$extra]"
    local stamp="$VENV/.acd-installed"
    local want
    want="$(cat "$ACD_ROOT/pyproject.toml" | sha256sum | cut -c1-16) $spec"
    if [ ! -f "$stamp" ] || ! grep -qxF "$want" "$stamp"; then
        echo "acd: installing Python packages into $VENV ($spec)" >&2
        "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
        (cd "$ACD_ROOT" && "$VENV/bin/python" -m pip install -q -e "$spec") ||
            die "pip install failed"
        # Numba compiles the routing kernels once into its on-disk cache (~20 s here), so the
        # daemon's first start does not.
        echo "acd: compiling the routing kernels (once per install)" >&2
        "$VENV/bin/acd" precompile >&2 || die "acd precompile failed"
        write_stamp "$stamp" "$want" "$extra"
    fi
}

write_stamp() {
    # write_stamp FILE WANT EXTRA: what is installed; the dev stamp covers the runtime set too,
    # so with EXTRA both lines. (It must return 0 without EXTRA: scripts/run runs under set -e,
    # and a trailing `[ -n "" ] && ...` once ended the first run after a fresh install with 1.)
    echo "$2" >"$1"
    if [ -n "$3" ]; then
        echo "${2% *} ." >>"$1"
    fi
}
