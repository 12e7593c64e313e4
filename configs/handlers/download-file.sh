#!/bin/sh
# download-file.sh: iotbox job handler. Downloads a file, checks it, and puts it in place atomically.
#
# Usage:  download-file.sh USER URL DEST [SHA256]
#   USER    the step's runAsUser (always argv[1], may be empty; iotd has already switched to it)
#   URL     anything curl or wget can fetch (curl is used when both exist)
#   DEST    the file to write, or an existing directory (then the file is named after the URL's
#           last path segment)
#   SHA256  optional: the expected SHA-256 of the file, 64 hex digits
# The file is fetched into a temporary file next to DEST and renamed over DEST only once complete
# (and verified), so DEST is either the old file or the whole new one, never a partial download.
# URLs are shown without their query string: a pre-signed URL's query holds its signature.
#
# Exit:   0 downloaded (and verified) into DEST
#         1 failed (no curl/wget, download error, checksum mismatch); nothing is left behind
#         2 usage error

me=${0##*/}
fail() { printf '%s: %s\n' "$me" "$1" >&2; exit "${2:-1}"; }

case $# in 3 | 4) ;; *) fail "usage: $me USER URL DEST [SHA256]" 2 ;; esac
url=$2 dest=$3 want=$(printf '%s' "${4:-}" | tr 'A-F' 'a-f')
shown=${url%%\?*}
case $url in '' | -*) fail "not a URL: '$shown'" 2 ;; esac
[ -n "$dest" ] || fail "empty destination" 2
case $want in *[!0-9a-f]*) fail "SHA256 must be 64 hex digits, got '$4'" 2 ;; esac
[ -z "$want" ] || [ ${#want} -eq 64 ] || fail "SHA256 must be 64 hex digits, got '$4'" 2

if [ -d "$dest" ]; then
    path=${shown%%#*}
    path=${path#*://}
    case $path in */*) name=${path##*/} ;; *) name= ;; esac
    case $name in '' | . | ..) fail "cannot name a file after $shown: give DEST as a file path" 2 ;; esac
    dest=${dest%/}/$name
fi
case $dest in */*) dir=${dest%/*} ;; *) dir=. ;; esac
dir=${dir:-/}
[ -d "$dir" ] || fail "directory $dir does not exist"
[ ! -d "$dest" ] || fail "$dest is a directory"

if command -v curl >/dev/null 2>&1; then tool=curl
elif command -v wget >/dev/null 2>&1; then tool=wget
else fail "neither curl nor wget found: install one of them"
fi
if [ -n "$want" ]; then
    command -v sha256sum >/dev/null 2>&1 || fail "sha256sum not found: cannot verify the download"
fi

tmp=
trap '[ -z "$tmp" ] || rm -f "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
tmp=$(mktemp "$dir/.${dest##*/}.XXXXXX") || fail "cannot create a temporary file in $dir"

rc=0
case $tool in
curl) err=$(curl -fsSL -o "$tmp" "$url" 2>&1) || rc=$? ;;
wget) err=$(wget -q -O "$tmp" "$url" 2>&1) || rc=$? ;;
esac
if [ $rc -ne 0 ]; then
    nl='
'
    err=${err##*"$nl"}
    fail "download of $shown failed: ${err:-$tool exited with status $rc}"
fi

if [ -n "$want" ]; then
    got=$(sha256sum <"$tmp") || fail "sha256sum failed on the download"
    got=${got%% *}
    [ "$got" = "$want" ] || fail "SHA-256 mismatch for $shown: expected $want, got $got"
fi

# mktemp made the file 0600; give it the mode a plain download would have had.
chmod "$(printf '%o' $((0666 & ~0$(umask))))" "$tmp" || fail "cannot set the mode of $tmp"
sync "$tmp" 2>/dev/null || sync
mv -f "$tmp" "$dest" || fail "cannot rename the download to $dest"
tmp=
printf 'downloaded %s to %s%s\n' "$shown" "$dest" "${want:+ (SHA-256 verified)}"
