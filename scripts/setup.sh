#!/bin/sh
# Installs what Airlock needs on a Debian/Ubuntu host, and only what is missing:
#   OS packages: runc, crun, runsc (gVisor), e2fsprogs (mkfs.ext4 for job disks),
#                mount + util-linux (loop mounts), perl (selftest probes);
#                with --for-tests also gcc and libc6-dev (a static i386-ABI test program),
#                openssh-client (ssh-keygen: real SSH keys and signatures), curl (egress tests) and mmdebstrap
#                (the Debian test image of scripts/build-debian-image.sh);
#                with --for-bench also gcc and make (the build benchmark) and curl (egress);
#   npm packages: `npm ci` when node_modules is missing or older than package-lock.json
#                (with python3, make and g++ for the native build of better-sqlite3);
#   the build:    `npm run build` when dist/ is missing or older than a source file.
# Progress goes to stderr, so `./airlock ... --json` keeps a clean stdout.
# Usage: sh scripts/setup.sh [--for-tests] [--for-bench] [--quiet]
set -eu

cd "$(dirname "$0")/.."
quiet=0
bench=0
tests=0
for arg in "$@"; do
  case "$arg" in
    --quiet) quiet=1 ;;
    --for-bench) bench=1 ;;
    --for-tests) tests=1 ;;
    *) echo "airlock setup: unknown option $arg" >&2; exit 2 ;;
  esac
done

say() { [ "$quiet" = 1 ] || echo "airlock setup: $*" >&2; }
fail() { echo "airlock setup: $*" >&2; exit 1; }

[ "$(uname -s)" = Linux ] || fail "Airlock sandboxes need Linux (this is $(uname -s))."
command -v node >/dev/null 2>&1 || fail "Node.js is missing: install Node.js 20 or newer (https://nodejs.org), then run this again."
command -v npm >/dev/null 2>&1 || fail "npm is missing: install npm (it ships with Node.js), then run this again."
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || fail "Node.js $(node --version) is too old: Airlock needs Node.js 20 or newer."
if [ "$tests" = 1 ] || [ "$bench" = 1 ]; then
  [ "$(id -u)" = 0 ] || fail "the tests and benchmarks create real sandboxes (user namespaces with their own host ID ranges, cgroups, loop-mounted disks) and must run as root: run this as root (sudo)."
fi

# --- OS packages -----------------------------------------------------------------------------
PATH="$PATH:/usr/sbin:/sbin"
missing=""
need() { command -v "$1" >/dev/null 2>&1 || missing="$missing $2"; }
need runc runc
need crun crun
need runsc runsc
need mkfs.ext4 e2fsprogs
need losetup mount
need mount mount
need perl perl-base
npm_needed=0
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm_needed=1
  # npm ci builds better-sqlite3 (the embedded database) from source with node-gyp.
  need python3 python3
  need make make
  need g++ g++
fi
if [ "$bench" = 1 ]; then
  need gcc gcc
  need make make
  # the egress benchmark fetches its packages with curl
  need curl curl
fi
if [ "$tests" = 1 ]; then
  need gcc gcc
  # real SSH keys and SSHSIG signatures in the signed-job tests
  need ssh-keygen openssh-client
  # the Debian image of the digest-pinned image tests (scripts/build-debian-image.sh)
  need mmdebstrap mmdebstrap
  # a job of the egress tests fetches through its proxy with curl (from the host image's /usr)
  need curl curl
  # libc.a for a static test program; gcc prints the bare name when it has none.
  case "$(gcc -print-file-name=libc.a 2>/dev/null)" in
    /*) ;;
    *) missing="$missing libc6-dev" ;;
  esac
fi

if [ -n "$missing" ]; then
  [ "$(id -u)" = 0 ] || fail "missing OS packages:$missing. Run this as root (sudo) so it can install them with apt-get, or install them yourself."
  command -v apt-get >/dev/null 2>&1 || fail "missing OS packages:$missing, and apt-get is not available here: install them with your package manager (gVisor: https://gvisor.dev/docs/user_guide/install/)."
  say "installing OS packages:$missing (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || fail "apt-get update failed: check the network and /etc/apt/sources.list, then run this again."
  # runsc (gVisor) is packaged by Debian but not by every Ubuntu release: install the others
  # without it if it is not to be had, and say so.
  installable=""
  for pkg in $missing; do
    if apt-cache show "$pkg" >/dev/null 2>&1; then installable="$installable $pkg"; else unavailable="${unavailable:-} $pkg"; fi
  done
  if [ -n "$installable" ]; then
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $installable >/dev/null || fail "apt-get install$installable failed (its messages are above)."
    say "installed:$installable"
  fi
  if [ -n "${unavailable:-}" ]; then
    case " $unavailable " in
      *" runsc "*) say "runsc (gVisor) is not in this system's package sources: the gvisor runtime stays unavailable and its tests are skipped. Install it from https://gvisor.dev/docs/user_guide/install/ to use it." ;;
    esac
    for pkg in $unavailable; do
      [ "$pkg" = runsc ] || fail "package $pkg is not available from apt-get here; install it and run this again."
    done
  fi
fi

# --- npm packages and build -------------------------------------------------------------------
if [ "$npm_needed" = 1 ]; then
  say "installing npm packages (npm ci; better-sqlite3 is compiled, about a minute)"
  npm ci --no-audit --no-fund --loglevel=error >&2 || fail "npm ci failed (see above): is the npm registry reachable, and did the build of better-sqlite3 find python3, make and g++?"
fi
stamp=dist/.build-stamp
if [ ! -f "$stamp" ] || [ -n "$(find src test bench package.json tsconfig.json -newer "$stamp" -print 2>/dev/null | head -n 1)" ]; then
  say "building (tsc)"
  npm run -s build >&2 || fail "the TypeScript build failed (see above)."
  touch "$stamp"
fi
