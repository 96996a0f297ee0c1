#!/bin/sh
# Builds the release binaries of ssegw into dist/ with their SHA-256
# checksums:
#
#   deploy/release.sh [--targets OS/ARCH,...] VERSION
#
# VERSION is a semantic version, such as 1.2.0 or v1.2.0-rc.1. Each binary
# is static (CGO_ENABLED=0) and prints VERSION, the commit and the build
# date with `ssegw version`. The date is the current time, or
# SOURCE_DATE_EPOCH when set, for reproducible builds. --targets builds
# a subset of the default linux/amd64, linux/arm64, windows/amd64 and
# windows/arm64. Files: dist/ssegw-OS-ARCH (.exe on Windows) and
# dist/SHA256SUMS, which `sha256sum -c SHA256SUMS` checks.
set -eu

targets="linux/amd64,linux/arm64,windows/amd64,windows/arm64"
usage="usage: deploy/release.sh [--targets OS/ARCH,...] VERSION"
while [ $# -gt 0 ]; do
	case "$1" in
	--targets)
		[ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
		targets="$2"
		shift 2
		;;
	--targets=*)
		targets="${1#--targets=}"
		shift
		;;
	-*)
		echo "release.sh: unknown option $1" >&2
		echo "$usage" >&2
		exit 2
		;;
	*)
		break
		;;
	esac
done
if [ $# -ne 1 ]; then
	echo "$usage" >&2
	exit 2
fi
version="$1"
if ! printf '%s\n' "$version" | grep -Eq '^v?[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$'; then
	echo "release.sh: invalid version \"$version\": use a semantic version such as 1.2.0 or 1.2.0-rc.1" >&2
	exit 2
fi

cd "$(dirname "$0")/.."

# The commit, marked -dirty when the tree has changes that are not
# committed, so that such a build is never taken for the commit's.
commit=""
if git rev-parse --git-dir >/dev/null 2>&1; then
	commit="$(git rev-parse HEAD)"
	if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
		commit="$commit-dirty"
	fi
fi
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
	date="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)"
else
	date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
fi

targets="$(printf '%s' "$targets" | tr ',' ' ')"
if [ -z "$(printf '%s' "$targets" | tr -d ' ')" ]; then
	echo "release.sh: --targets lists no target" >&2
	exit 2
fi
for target in $targets; do
	case "$target" in
	linux/amd64 | linux/arm64 | windows/amd64 | windows/arm64) ;;
	*)
		echo "release.sh: unsupported target \"$target\": use linux/amd64, linux/arm64, windows/amd64 or windows/arm64" >&2
		exit 2
		;;
	esac
done

# Remove the binaries of an earlier run, so that SHA256SUMS lists only
# this one's.
mkdir -p dist
rm -f dist/ssegw-* dist/SHA256SUMS

for target in $targets; do
	goos="${target%/*}"
	goarch="${target#*/}"
	suffix=""
	if [ "$goos" = windows ]; then
		suffix=".exe"
	fi
	output="dist/ssegw-$goos-$goarch$suffix"
	echo "building $output"
	CGO_ENABLED=0 GOOS="$goos" GOARCH="$goarch" go build -trimpath \
		-ldflags "-s -w -X main.version=$version -X main.commit=$commit -X main.date=$date" \
		-o "$output" ./cmd/ssegw
done

(cd dist && sha256sum ssegw-* >SHA256SUMS)
echo "wrote dist/SHA256SUMS:"
cat dist/SHA256SUMS
