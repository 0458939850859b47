#!/bin/sh
# Builds a minimal Debian image with mmdebstrap, from this machine's configured Debian
# mirror, as an OCI image layout directory (one gzip layer, config, manifest, index.json,
# oci-layout) that `airlock image import` takes:
#
#   sh scripts/build-debian-image.sh OUT_DIR [--name NAME] [--suite SUITE]
#                                    [--variant minbase|essential] [--uncompressed]
#   airlock image import OUT_DIR --name NAME
#
# Reproducible-ish: SOURCE_DATE_EPOCH (default: today, 00:00 UTC) sets every timestamp,
# gzip stores no name or time, and the JSON is written byte for byte the same way, so two
# builds from the same mirror state give the same digests. Needs root (mmdebstrap's root
# mode) and installs mmdebstrap with apt-get if it is missing. Documentation, manual pages
# and translations are left out (copyright files are kept); /dev is left out (Airlock's
# importer refuses device nodes, and the runtime makes /dev).
set -eu

usage() { echo "usage: $0 OUT_DIR [--name NAME] [--suite SUITE] [--variant minbase|essential] [--uncompressed]" >&2; exit 2; }
fail() { echo "build-debian-image: $*" >&2; exit 1; }
say() { echo "build-debian-image: $*" >&2; }

[ $# -ge 1 ] || usage
out=$1
shift
name=debian
suite=bookworm
variant=minbase
compress=gzip
while [ $# -gt 0 ]; do
  case "$1" in
    --name) [ $# -ge 2 ] || usage; name=$2; shift 2 ;;
    --suite) [ $# -ge 2 ] || usage; suite=$2; shift 2 ;;
    --variant) [ $# -ge 2 ] || usage; variant=$2; shift 2 ;;
    --uncompressed) compress=none; shift ;;
    *) usage ;;
  esac
done
case "$variant" in minbase|essential) ;; *) fail "--variant must be minbase or essential" ;; esac
case "$name" in *[!a-z0-9._/-]*|'') fail "--name must be lower-case letters, digits and . _ - /" ;; esac
[ "$(id -u)" = 0 ] || fail "run as root (mmdebstrap --mode=root)"
[ ! -e "$out" ] || [ -z "$(ls -A "$out" 2>/dev/null)" ] || fail "$out exists and is not empty"

if ! command -v mmdebstrap >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || fail "mmdebstrap is missing and apt-get is not available"
  say "installing mmdebstrap (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || fail "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null || fail "apt-get install mmdebstrap failed"
fi
for tool in sha256sum gzip stat; do command -v $tool >/dev/null 2>&1 || fail "$tool is missing"; done

# The machine's own Debian sources for this suite (and its -updates and -security), as
# one-line entries: from deb822 *.sources files and from one-line *.list files.
sources=$(mktemp)
work=$(mktemp -d)
tmp_out="$out.tmp-$$"
# A failed build leaves nothing behind (the layout appears at OUT_DIR only when complete).
trap 'rm -rf "$sources" "$work" "$tmp_out"' EXIT
for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -f "$file" ] || continue
  case "$file" in
    *.sources)
      awk -v suite="$suite" '
        function flush() {
          if (types ~ /(^| )deb( |$)/ && uris ~ /debian/) {
            n = split(suites, s, " "); m = split(uris, u, " ")
            for (i = 1; i <= n; i++) if (s[i] == suite || index(s[i], suite "-") == 1)
              for (j = 1; j <= m; j++) print "deb " u[j] " " s[i] " " comps
          }
          types = ""; uris = ""; suites = ""; comps = ""
        }
        /^[ \t]*$/ { flush(); next }
        /^Types:/ { sub(/^Types:[ \t]*/, ""); types = $0 }
        /^URIs:/ { sub(/^URIs:[ \t]*/, ""); uris = $0 }
        /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
        /^Components:/ { sub(/^Components:[ \t]*/, ""); comps = $0 }
        END { flush() }' "$file" ;;
    *)
      awk -v suite="$suite" '$1 == "deb" {
          i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
          if ($i ~ /debian/ && ($(i+1) == suite || index($(i+1), suite "-") == 1)) {
            line = "deb " $i; for (k = i + 1; k <= NF; k++) line = line " " $k; print line } }' "$file" ;;
  esac
done | sort -u > "$sources"
if [ ! -s "$sources" ]; then
  say "no Debian $suite source in /etc/apt/sources.list*: using http://deb.debian.org/debian"
  echo "deb http://deb.debian.org/debian $suite main" > "$sources"
fi
say "sources: $(tr '\n' ';' < "$sources")"

: "${SOURCE_DATE_EPOCH:=$(( $(date +%s) / 86400 * 86400 ))}"
export SOURCE_DATE_EPOCH
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
arch=$(dpkg --print-architecture)

# Each source as its own "deb …" argument: mmdebstrap writes them to the image's
# /etc/apt/sources.list (a file argument would be copied under a random name, and the
# image would differ from build to build).
set --
while IFS= read -r line; do set -- "$@" "$line"; done < "$sources"
start=$(date +%s)
say "mmdebstrap --variant=$variant $suite ($arch), SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"
mmdebstrap --quiet --mode=root --variant="$variant" --architectures="$arch" --format=tar \
  --skip=output/dev \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  "$suite" "$work/layer.tar" "$@" >&2 || fail "mmdebstrap failed (messages above)"

diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
if [ "$compress" = gzip ]; then
  gzip -n -6 "$work/layer.tar"
  layer=$work/layer.tar.gz
  layer_type=application/vnd.oci.image.layer.v1.tar+gzip
else
  layer=$work/layer.tar
  layer_type=application/vnd.oci.image.layer.v1.tar
fi

rm -rf "$tmp_out"
mkdir -p "$tmp_out/blobs/sha256"
# put FILE: moves it into the blobs by its digest, prints "DIGEST SIZE".
put() {
  digest=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  mv "$1" "$tmp_out/blobs/sha256/$digest"
  echo "$digest $size"
}
set -- $(put "$layer")
layer_digest=$1 layer_size=$2

printf '{"architecture":"%s","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},"created":"%s","history":[{"created":"%s","created_by":"scripts/build-debian-image.sh: mmdebstrap --variant=%s %s"}],"os":"linux","rootfs":{"diff_ids":["sha256:%s"],"type":"layers"}}' \
  "$arch" "$created" "$created" "$variant" "$suite" "$diff_id" > "$work/config.json"
set -- $(put "$work/config.json")
config_digest=$1 config_size=$2

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"%s","digest":"sha256:%s","size":%s}],"annotations":{"org.opencontainers.image.created":"%s"}}' \
  "$config_digest" "$config_size" "$layer_type" "$layer_digest" "$layer_size" "$created" > "$work/manifest.json"
set -- $(put "$work/manifest.json")
manifest_digest=$1 manifest_size=$2

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
  "$manifest_digest" "$manifest_size" "$arch" "$name" > "$tmp_out/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' > "$tmp_out/oci-layout"

rmdir "$out" 2>/dev/null || true
mv "$tmp_out" "$out"
say "done in $(( $(date +%s) - start ))s: $out ($(( layer_size / 1048576 )) MiB layer)"
say "import it with: airlock image import $out --name $name"
echo "$name@sha256:$manifest_digest"
