#!/usr/bin/env bash
# Build a free-threaded CPython 3.13 ("3.13t", configure --disable-gil) from Debian's source
# package, once: `scripts/build_free_threaded_python.sh [DIR]` (default build/free-threaded).
#
#   DIR/src/      the source package (apt-get source --download-only: the .dsc, Debian's diff and
#                 CPython's own release tarball, checked against trixie's signed Sources index)
#   DIR/python/   the installed interpreter: DIR/python/bin/python3.13t
#
# A second call returns at once when DIR/python holds a working free-threaded interpreter; a
# build that stopped half-way starts again from the tarball. apt runs with its own source list,
# package lists and caches under DIR/apt (one `deb-src` line for trixie on the machine's own
# mirror), so neither the machine's apt sources nor its package lists are changed.
#
# Environment: FT_MIRROR (default: the first http(s) URI of the machine's Debian apt sources,
# else http://deb.debian.org/debian), FT_SUITE (trixie), FT_JOBS (nproc).
# Needs: a C compiler and make, and the -dev packages of the modules the suite uses (libffi,
# libssl, zlib, bz2, lzma, sqlite3); the check at the end fails when one of those is missing.
set -euo pipefail

dir="${1:-build/free-threaded}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
prefix="$dir/python"
py="$prefix/bin/python3.13t"
suite="${FT_SUITE:-trixie}"
jobs="${FT_JOBS:-$(nproc)}"

# The interpreter we want: free-threaded, GIL off under PYTHON_GIL=0, with the C modules the
# suite imports.
check() {
    PYTHON_GIL=0 "$py" -c '
import sys, sysconfig
import ctypes, ssl, zlib, bz2, lzma, sqlite3, _ctypes, _multiprocessing, _posixshmem  # noqa: F401
assert sysconfig.get_config_var("Py_GIL_DISABLED") == 1, "not a free-threaded build"
assert not sys._is_gil_enabled(), "the GIL is on under PYTHON_GIL=0"
' 2>&1
}

exec 9>"$dir/.lock"
flock 9  # two builds at once would write the same prefix
if [[ -x "$py" ]] && check >/dev/null; then
    echo "free-threaded Python: $py ($("$py" -VV | head -n1))"
    exit 0
fi

start=$SECONDS
mirror="${FT_MIRROR:-}"
if [[ -z "$mirror" ]]; then
    mirror="$(grep -hoE 'https?://[^ ]*/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
        /etc/apt/sources.list.d/*.list 2>/dev/null | head -n1 | tr -d ' ' || true)"
    mirror="${mirror:-http://deb.debian.org/debian}"
fi

apt_dir="$dir/apt"
mkdir -p "$apt_dir/lists/partial" "$dir/src"
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" \
    >"$apt_dir/sources.list"
apt_opts=(
    -o "Dir::Etc::SourceList=$apt_dir/sources.list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$apt_dir/lists"
    -o "Dir::Cache::pkgcache="
    -o "Dir::Cache::srcpkgcache="
    -o "APT::Sandbox::User=root"
)
shopt -s nullglob
tarballs=("$dir"/src/python3.13_*.orig.tar.xz)
if [[ ${#tarballs[@]} -eq 0 ]]; then
    echo "== fetching python3.13's source package from $mirror $suite"
    apt-get -q "${apt_opts[@]}" update
    (cd "$dir/src" && apt-get -q "${apt_opts[@]}" source --download-only python3.13)
    tarballs=("$dir"/src/python3.13_*.orig.tar.xz)
fi
tarball="${tarballs[-1]}"

echo "== building $(basename "$tarball") with --disable-gil into $prefix ($jobs jobs)"
work="$dir/work"
rm -rf "$work" "$prefix"
mkdir -p "$work"
tar -xf "$tarball" -C "$work" --strip-components=1
cd "$work"
./configure --disable-gil --prefix="$prefix" --without-ensurepip --disable-test-modules >"$dir/configure.log" 2>&1 \
    || { tail -n 40 "$dir/configure.log"; exit 1; }
make -j"$jobs" >"$dir/make.log" 2>&1 || { tail -n 60 "$dir/make.log"; exit 1; }
# The standard library's byte code is compiled once per optimisation level, in parallel.
make install COMPILEALL_OPTS="-j$jobs" >"$dir/install.log" 2>&1 || { tail -n 40 "$dir/install.log"; exit 1; }
cd "$dir"
rm -rf "$work"
if ! out="$(check)"; then
    echo "the interpreter built in $prefix is not what the tests need:" >&2
    echo "$out" >&2
    exit 1
fi
echo "free-threaded Python: $py ($("$py" -VV | head -n1)), built in $((SECONDS - start)) s"
