#!/usr/bin/env bash
# install-criu.sh -- install a working CRIU (Debian trixie's criu 4.1.1) into a
# private root, plus the getsockopt shim, without touching the system's packages.
#
# Why: bookworm's criu 3.17 fails `criu check` on kernel 6.x here (vDSO), and
# installing trixie's criu system-wide would upgrade libc and ~50 packages. So we
# `apt-get download` criu and its whole shared-library closure from trixie with a
# PRIVATE apt configuration (nothing is added to /etc/apt), `dpkg -x` them into
# $AETHER_CRIU_ROOT/sysroot and run criu through that root's own loader.
# Background: /work/shared/notes/criu.md ("CRIU on this kind of machine").
#
# Layout (default root /opt/aetherless/criu, override with AETHER_CRIU_ROOT):
#   bin/criu                     wrapper: execs criu via the private loader ("$@" passed on).
#                                AETHER_CRIU_PRELOAD=1 adds --preload lib/criu-sockopt-shim.so,
#                                AETHER_CRIU_PRELOAD=/abs/path.so preloads that file instead.
#   bin/criu-shim                same, but always preloads the shim (needed to dump any
#                                TCP/UDP socket with criu 4.1.1 on Linux >= 6.16)
#   lib/criu-sockopt-shim.so     built from scripts/criu/criu-sockopt-shim.c
#   share/rpc.proto              criu's RPC protocol (`criu swrk`), from trixie's libcriu-dev
#   sysroot/                     extracted trixie debs (criu, libc6, libs, python3-pycriu)
#   sysroot/usr/lib/python3/dist-packages/pycriu   (rpc_pb2; needs python3-protobuf)
#   .stamp                       written after a successful install + verification
#
# Idempotent: if .stamp matches and `bin/criu --version` works, it exits at once.
# Environment:
#   AETHER_CRIU_ROOT              install prefix (default /opt/aetherless/criu)
#   AETHER_DEBIAN_MIRROR          Debian mirror (default: the one in the system's apt sources)
#   AETHER_DEBIAN_SECURITY_MIRROR Debian security mirror (default: from the system's sources;
#                                 "none" to skip trixie-security)
#   AETHER_CRIU_FORCE=1           reinstall even if the stamp is valid
set -euo pipefail

STAMP_FORMAT=1                  # bump when the layout / logic of this script changes
SUITE=trixie
ARCH_TRIPLET=x86_64-linux-gnu
LOADER_NAME=ld-linux-x86-64.so.2

ROOT="${AETHER_CRIU_ROOT:-/opt/aetherless/criu}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SHIM_SRC="$SCRIPT_DIR/criu/criu-sockopt-shim.c"
SHIM_TEST_SRC="$SCRIPT_DIR/criu/shim-selftest.c"

SYSROOT="$ROOT/sysroot"
LIBDIR="$SYSROOT/usr/lib/$ARCH_TRIPLET"
LOADER="$LIBDIR/$LOADER_NAME"
CRIU_BIN="$SYSROOT/usr/sbin/criu"
SHIM_SO="$ROOT/lib/criu-sockopt-shim.so"
WRAPPER="$ROOT/bin/criu"
WRAPPER_SHIM="$ROOT/bin/criu-shim"
STAMP="$ROOT/.stamp"

log() { printf 'install-criu: %s\n' "$*" >&2; }
die() { printf '\ninstall-criu: ERROR: %s\n\n' "$*" >&2; exit 1; }

case "$ROOT" in
  /*) ;;
  *) die "AETHER_CRIU_ROOT must be an absolute path (got '$ROOT')" ;;
esac
[ "$(uname -m)" = x86_64 ] || die "only x86_64 is supported (got $(uname -m))"
[ -f "$SHIM_SRC" ] || die "shim source not found: $SHIM_SRC"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

expected_stamp() {
  printf 'format=%s\nsuite=%s\nroot=%s\nshim_sha256=%s\n' \
    "$STAMP_FORMAT" "$SUITE" "$ROOT" "$(sha_of "$SHIM_SRC")"
}

criu_version_ok() {
  [ -x "$LOADER" ] && [ -x "$CRIU_BIN" ] && [ -x "$WRAPPER" ] || return 1
  local out
  out="$("$WRAPPER" --version 2>&1)" || return 1
  case "$out" in *"Version: "*) return 0 ;; *) return 1 ;; esac
}

# ---------------------------------------------------------------- fast path
if [ "${AETHER_CRIU_FORCE:-0}" != 1 ] && [ -f "$STAMP" ] && [ -f "$SHIM_SO" ] &&
   [ "$(cat "$STAMP")" = "$(expected_stamp)" ] && criu_version_ok; then
  log "up to date ($ROOT, $("$WRAPPER" --version 2>/dev/null | head -n1))"
  exit 0
fi

# ---------------------------------------------------------------- slow path
for tool in apt-get apt-cache dpkg-deb gcc readelf sha256sum flock; do
  command -v "$tool" >/dev/null 2>&1 || die "required tool '$tool' not found (apt-get install gcc binutils dpkg apt util-linux)"
done

mkdir -p "$ROOT" "$ROOT/bin" "$ROOT/lib" "$ROOT/share"
exec 9>"$ROOT/.lock"
flock 9     # one installer at a time; a second one waits, then re-checks below

if [ "${AETHER_CRIU_FORCE:-0}" != 1 ] && [ -f "$STAMP" ] && [ -f "$SHIM_SO" ] &&
   [ "$(cat "$STAMP")" = "$(expected_stamp)" ] && criu_version_ok; then
  log "up to date (installed by a concurrent run)"
  exit 0
fi
rm -f "$STAMP"

# Is the private root usable as it is (then only shim/wrappers need work)?
sysroot_ok() {
  [ -x "$LOADER" ] && [ -x "$CRIU_BIN" ] &&
    "$LOADER" --library-path "$LIBDIR" "$CRIU_BIN" --version >/dev/null 2>&1
}

# Every shared library criu needs (transitively) must come from the sysroot,
# otherwise the loader silently falls back to the system's (bookworm) copy.
check_closure() {
  local root="$1" libdir="$1/usr/lib/$ARCH_TRIPLET" out bad
  out="$("$libdir/$LOADER_NAME" --library-path "$libdir" --list "$root/usr/sbin/criu" 2>&1)" ||
    die "the private loader cannot resolve criu's libraries:
$out"
  bad="$(printf '%s\n' "$out" | awk -v d="$libdir/" '/=>/ { if (index($3, d) != 1) print }')"
  [ -z "$bad" ] || die "some of criu's libraries do not come from the private root:
$bad
(a trixie package is missing from the download set)"
  # readelf cross-check: every NEEDED soname of criu and of each library in the sysroot's
  # lib dir must exist there.
  local f n missing=""
  for f in "$root/usr/sbin/criu" "$libdir"/*.so*; do
    [ -f "$f" ] || continue
    for n in $(readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
      [ -e "$libdir/$n" ] || missing="$missing $n(${f##*/})"
    done
  done
  [ -z "$missing" ] || die "unresolved NEEDED entries in the private root:$missing"
}

# ------------------------------------------------------ apt mirror detection
codename="$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")"
[ -n "$codename" ] || codename=bookworm

# Prints "URI SUITE" pairs from the system's apt sources (one-line and deb822 formats).
system_sources() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" |
      awk '$1 == "deb" && NF >= 3 { print $2, $3 }'
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && enabled !~ /^[Nn][Oo]$/) {
          n = split(uris, u, " "); m = split(suites, s, " ")
          for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) print u[i], s[j]
        }
        types = uris = suites = enabled = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      tolower($1) == "types:"   { $1 = ""; types = $0 }
      tolower($1) == "uris:"    { $1 = ""; uris = $0 }
      tolower($1) == "suites:"  { $1 = ""; suites = $0 }
      tolower($1) == "enabled:" { $1 = ""; enabled = $0; gsub(/ /, "", enabled) }
      END { flush() }
    ' "$f"
  done
}

pick_uri() {  # $1 = suite to look for
  system_sources | awk -v s="$1" '$2 == s { print $1; exit }'
}

MIRROR="${AETHER_DEBIAN_MIRROR:-$(pick_uri "$codename")}"
if [ -z "$MIRROR" ]; then
  MIRROR=http://deb.debian.org/debian
  log "no '$codename' source found in /etc/apt; using $MIRROR"
fi
MIRROR="${MIRROR%/}"
SEC_MIRROR="${AETHER_DEBIAN_SECURITY_MIRROR:-$(pick_uri "$codename-security")}"
SEC_MIRROR="${SEC_MIRROR%/}"
[ "$SEC_MIRROR" = none ] && SEC_MIRROR=""

KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$KEYRING" ] && [ -f /usr/share/keyrings/debian-archive-$SUITE-stable.gpg ] ||
  die "the Debian archive keyring has no $SUITE key ($KEYRING, /usr/share/keyrings/debian-archive-$SUITE-stable.gpg).
Update it from bookworm: apt-get install debian-archive-keyring (2023.3+deb12u1 or newer has the $SUITE keys)."

# ------------------------------------------------------------ private apt
# State lives under $ROOT/.apt so that nothing in /etc/apt or /var/lib/apt changes.
APT_DIR="$ROOT/.apt"
mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/debs"
{
  echo "# written by scripts/install-criu.sh -- private, never used by the system's apt"
  echo "deb [signed-by=$KEYRING] $MIRROR $SUITE main"
  echo "deb [signed-by=$KEYRING] $MIRROR $SUITE-updates main"
  [ -z "$SEC_MIRROR" ] || echo "deb [signed-by=$KEYRING] $SEC_MIRROR $SUITE-security main"
} >"$APT_DIR/sources.list"

APT_OPTS=(
  -o "Dir::Etc::SourceList=$APT_DIR/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::Etc::Preferences=/dev/null"
  -o "Dir::Etc::PreferencesParts=/dev/null"
  -o "Dir::State::Lists=$APT_DIR/lists"
  -o "Dir::State::status=/dev/null"
  -o "Dir::State::extended_states=$APT_DIR/extended_states"
  -o "Dir::Cache=$APT_DIR/cache"
  -o "Dir::Cache::pkgcache=$APT_DIR/cache/pkgcache.bin"
  -o "Dir::Cache::srcpkgcache=$APT_DIR/cache/srcpkgcache.bin"
)
if id _apt >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  chown _apt "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/debs" 2>/dev/null || true
fi

if ! sysroot_ok || [ "${AETHER_CRIU_FORCE:-0}" = 1 ]; then
  t0=$(date +%s)
  log "fetching the $SUITE package index from $MIRROR${SEC_MIRROR:+ and $SEC_MIRROR} (private apt state in $APT_DIR)"
  if ! upd_out="$(apt-get "${APT_OPTS[@]}" -q update 2>&1)"; then
    die "apt-get update for $SUITE failed:
$upd_out"
  fi
  cand="$(apt-cache "${APT_OPTS[@]}" policy criu 2>/dev/null | awk '/Candidate:/ { print $2 }')"
  case "$cand" in
    ""|"(none)") die "criu is not available from $MIRROR $SUITE (download or signature check failed?).
apt-get update said:
$upd_out" ;;
  esac
  log "criu candidate: $cand"
  if printf '%s\n' "$upd_out" | grep -Eq '^(W|E):'; then
    # apt-get update exits 0 when some indexes fail; the main suite did come through
    # (criu has a candidate), so only show what went wrong (e.g. trixie-security).
    log "WARNING: apt-get update reported problems:"
    printf '%s\n' "$upd_out" | grep -E '^(W|E):' >&2 || true
  fi

  # Package closure: criu's Depends/Pre-Depends, recursively (all of them are shared
  # libraries for criu in trixie: ~25 packages). check_closure verifies it afterwards.
  mapfile -t PKGS < <(
    apt-cache "${APT_OPTS[@]}" depends --recurse --no-recommends --no-suggests \
      --no-conflicts --no-breaks --no-replaces --no-enhances criu 2>/dev/null |
      grep -E '^[a-z0-9][a-z0-9.+-]*$' | sort -u)
  [ "${#PKGS[@]}" -ge 5 ] || die "could not compute criu's dependency closure (got: ${PKGS[*]:-nothing})"
  [ "${#PKGS[@]}" -le 80 ] || die "criu's dependency closure is unexpectedly large (${#PKGS[@]} packages): ${PKGS[*]}"
  for p in libcompel1 libc6; do
    printf '%s\n' "${PKGS[@]}" | grep -qx "$p" || PKGS+=("$p")
  done
  EXTRA_PKGS=(python3-pycriu libcriu-dev)   # rpc_pb2 / rpc.proto: nice to have, not fatal

  rm -f "$APT_DIR/debs"/*.deb
  log "downloading ${#PKGS[@]} packages: ${PKGS[*]}"
  if ! dl_out="$(cd "$APT_DIR/debs" && apt-get "${APT_OPTS[@]}" -q download "${PKGS[@]}" 2>&1)"; then
    die "apt-get download from $SUITE failed:
$dl_out"
  fi
  if ! ex_out="$(cd "$APT_DIR/debs" && apt-get "${APT_OPTS[@]}" -q download "${EXTRA_PKGS[@]}" 2>&1)"; then
    log "WARNING: could not download ${EXTRA_PKGS[*]} (pycriu / rpc.proto will be missing):"
    printf '%s\n' "$ex_out" >&2
  fi
  for p in "${PKGS[@]}"; do
    compgen -G "$APT_DIR/debs/${p}_*.deb" >/dev/null || die "package $p was not downloaded"
  done

  STAGE="$ROOT/sysroot.new"
  rm -rf "$STAGE"
  mkdir -p "$STAGE"
  for deb in "$APT_DIR/debs"/*.deb; do
    dpkg-deb -x "$deb" "$STAGE" || die "dpkg-deb -x $deb failed"
  done
  [ -x "$STAGE/usr/lib/$ARCH_TRIPLET/$LOADER_NAME" ] || die "no $LOADER_NAME in the extracted libc6"
  [ -x "$STAGE/usr/sbin/criu" ] || die "no usr/sbin/criu in the extracted criu package"
  check_closure "$STAGE"
  "$STAGE/usr/lib/$ARCH_TRIPLET/$LOADER_NAME" --library-path "$STAGE/usr/lib/$ARCH_TRIPLET" \
    "$STAGE/usr/sbin/criu" --version >/dev/null 2>&1 || die "the extracted criu does not run:
$("$STAGE/usr/lib/$ARCH_TRIPLET/$LOADER_NAME" --library-path "$STAGE/usr/lib/$ARCH_TRIPLET" "$STAGE/usr/sbin/criu" --version 2>&1)"
  ( cd "$APT_DIR/debs" && ls -1 *.deb ) >"$STAGE/.debs"

  rm -rf "$ROOT/sysroot.old"
  [ ! -e "$SYSROOT" ] || mv "$SYSROOT" "$ROOT/sysroot.old"
  mv "$STAGE" "$SYSROOT"
  rm -rf "$ROOT/sysroot.old" "$APT_DIR/debs"/*.deb "$APT_DIR/cache/archives"/*.deb
  log "private root ready in $SYSROOT ($(( $(date +%s) - t0 )) s)"
else
  log "private root already valid: $SYSROOT"
  check_closure "$SYSROOT"
fi

# rpc.proto (libcriu-dev) -> share/rpc.proto
if [ -f "$SYSROOT/usr/include/criu/rpc.proto" ]; then
  cp -f "$SYSROOT/usr/include/criu/rpc.proto" "$ROOT/share/rpc.proto"
else
  log "WARNING: no rpc.proto in the private root (libcriu-dev was not downloaded)"
  rm -f "$ROOT/share/rpc.proto"
fi

# ------------------------------------------------------------------- shim
TMPD="$(mktemp -d)"
trap 'rm -rf "$TMPD"' EXIT
build_shim() {
  local tmp="$TMPD"
  gcc -O2 -Wall -Wextra -Werror -fPIC -shared -o "$tmp/shim.so" "$SHIM_SRC" -ldl ||
    die "building $SHIM_SRC failed"
  # Only old, stable glibc symbol versions: it must load under trixie's glibc.
  local vers
  vers="$(readelf -V --wide "$tmp/shim.so" | grep -o 'GLIBC_[0-9.]*' | sort -u | tr '\n' ' ')"
  log "shim needs: ${vers:-no versioned symbols}"

  # Self-test under the PRIVATE loader: without the shim, SO_PASSCRED on a TCP socket
  # fails with EOPNOTSUPP on Linux >= 6.16; with it, it returns 0.
  gcc -O2 -Wall -o "$tmp/selftest" "$SHIM_TEST_SRC" || die "building $SHIM_TEST_SRC failed"
  local rc=0 out
  out="$("$LOADER" --library-path "$LIBDIR" --preload "$tmp/shim.so" "$tmp/selftest" 2>&1)" || rc=$?
  [ "$rc" = 0 ] || die "shim self-test failed under the private loader (rc=$rc):
$out"
  rc=0
  out="$("$LOADER" --library-path "$LIBDIR" "$tmp/selftest" 2>&1)" || rc=$?
  case "$rc" in
    2) log "shim self-test ok (kernel returns EOPNOTSUPP without it; shim fixes it)" ;;
    0) log "shim self-test ok (this kernel does not need the shim)" ;;
    *) die "shim self-test without the shim behaved unexpectedly (rc=$rc): $out" ;;
  esac
  install -m 0755 "$tmp/shim.so" "$SHIM_SO.tmp"
  mv -f "$SHIM_SO.tmp" "$SHIM_SO"
}
build_shim

# --------------------------------------------------------------- wrappers
write_if_changed() {  # $1 = path, stdin = content
  local new
  new="$(cat)"
  if [ ! -f "$1" ] || [ "$(cat "$1")" != "$new" ]; then
    printf '%s\n' "$new" >"$1.tmp"
    chmod 0755 "$1.tmp"
    mv -f "$1.tmp" "$1"
  fi
}

write_if_changed "$WRAPPER" <<EOF
#!/bin/sh
# Generated by scripts/install-criu.sh: criu $SUITE from the private root $SYSROOT,
# run through that root's own loader and libraries.
# AETHER_CRIU_PRELOAD=1 preloads $SHIM_SO (needed to dump TCP/UDP sockets
# on Linux >= 6.16); AETHER_CRIU_PRELOAD=/path/x.so preloads that file instead.
L='$LIBDIR'
case "\${AETHER_CRIU_PRELOAD:-}" in
  ""|0|no|false) exec "\$L/$LOADER_NAME" --library-path "\$L" '$CRIU_BIN' "\$@" ;;
  /*) exec "\$L/$LOADER_NAME" --preload "\$AETHER_CRIU_PRELOAD" --library-path "\$L" '$CRIU_BIN' "\$@" ;;
  *) exec "\$L/$LOADER_NAME" --preload '$SHIM_SO' --library-path "\$L" '$CRIU_BIN' "\$@" ;;
esac
EOF

write_if_changed "$WRAPPER_SHIM" <<EOF
#!/bin/sh
# Generated by scripts/install-criu.sh: like $WRAPPER, always with the getsockopt shim.
L='$LIBDIR'
exec "\$L/$LOADER_NAME" --preload '$SHIM_SO' --library-path "\$L" '$CRIU_BIN' "\$@"
EOF

# ----------------------------------------------------------------- verify
criu_version_ok || die "$WRAPPER --version does not work:
$("$WRAPPER" --version 2>&1 || true)"
if [ "$(id -u)" = 0 ]; then
  out="$("$WRAPPER" check 2>&1)" || die "'$WRAPPER check' failed:
$out"
  printf '%s\n' "$out" | grep -q 'Looks good\.' || die "'$WRAPPER check' did not say 'Looks good.':
$out"
  out="$("$WRAPPER_SHIM" check 2>&1)" || die "'$WRAPPER_SHIM check' failed:
$out"
  printf '%s\n' "$out" | grep -q 'Looks good\.' || die "'$WRAPPER_SHIM check' did not say 'Looks good.':
$out"
  log "criu check: Looks good. (with and without the shim)"
else
  log "WARNING: not root: skipped 'criu check' (criu needs root); run again as root to verify"
fi

# The package index is only needed while installing (~20 MB): drop it.
rm -rf "$APT_DIR/lists" "$APT_DIR/cache" "$APT_DIR/debs" "$APT_DIR/extended_states"

expected_stamp >"$STAMP.tmp"
mv -f "$STAMP.tmp" "$STAMP"
log "done: $("$WRAPPER" --version 2>&1 | head -n1) -> $WRAPPER"
[ ! -f "$ROOT/share/rpc.proto" ] || log "rpc.proto: $ROOT/share/rpc.proto"
[ ! -d "$SYSROOT/usr/lib/python3/dist-packages/pycriu" ] ||
  log "pycriu: PYTHONPATH=$SYSROOT/usr/lib/python3/dist-packages (needs python3-protobuf)"
