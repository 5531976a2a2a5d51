#!/usr/bin/env bash
# Builds every Go module under upstream/ (each directory with a go.mod) into upstream/bin/, one binary per main
# package. Versions come from each module's go.mod/go.sum (-mod=readonly: a build never edits them); modules are
# fetched through the Go module proxy into the usual module cache, and -trimpath keeps local paths out of binaries.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$here/bin"
mkdir -p "$bin"

mapfile -t modules < <(find "$here" -name go.mod -not -path "$bin/*" -not -path '*/testdata/*' -printf '%h\n' | sort)
if ((${#modules[@]} == 0)); then
  echo "build.sh: no go.mod under $here" >&2
  exit 1
fi
for m in "${modules[@]}"; do
  echo "=== ${m#"$here"/}" >&2
  start=$SECONDS
  # `go build -o DIR ./...` writes one executable per main package and only checks the others compile.
  (cd "$m" && go build -trimpath -mod=readonly -o "$bin/" ./...)
  echo "    built in $((SECONDS - start))s" >&2
done
ls -l "$bin" >&2
