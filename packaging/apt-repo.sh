#!/bin/sh
# Builds a signed APT repository from Debian packages:
#
#   packaging/apt-repo.sh --key KEY --out DIR [--valid-days N] PACKAGE.deb...
#
# KEY names an OpenPGP secret key in $GNUPGHOME (its fingerprint, best): RSA
# of 4096 bits or more, refused otherwise. DIR receives
#   pool/main/<p>/<package>/<file>.deb, each with a detached signature
#       <file>.deb.asc beside it (gpg --verify <file>.deb.asc <file>.deb);
#   dists/stable/main/binary-<arch>/Packages, Packages.gz, Packages.xz;
#   dists/stable/Release, signed as InRelease (inline) and Release.gpg
#       (detached), SHA-256 and SHA-512 sums of every index;
#   strongroom-archive-keyring.gpg (and .asc): the public key that
#       apt's signed-by= names.
# --valid-days N writes Valid-Until into Release, so that a mirror replaying
# an old Release is refused after N days; the repository must then be
# signed again before that. Build into a directory of its own and publish
# it whole (rsync --delay-updates): a client updating from a half-rewritten
# directory gets a hash mismatch, never a wrong package.
set -eu

usage() {
    echo "usage: $0 --key KEY --out DIR [--valid-days N] PACKAGE.deb..." >&2
    exit 2
}
key= out= valid_days=
while [ $# -gt 0 ]; do
    case $1 in
        --key) [ $# -ge 2 ] || usage; key=$2; shift 2 ;;
        --out) [ $# -ge 2 ] || usage; out=$2; shift 2 ;;
        --valid-days) [ $# -ge 2 ] || usage; valid_days=$2; shift 2 ;;
        --) shift; break ;;
        -*) usage ;;
        *) break ;;
    esac
done
[ -n "$key" ] && [ -n "$out" ] && [ $# -gt 0 ] || usage
case $valid_days in
    '') ;;
    *[!0-9]* | 0*)
        echo "apt-repo.sh: --valid-days takes a positive number of days, not \"$valid_days\"" >&2
        exit 2
        ;;
esac
suite=stable
component=main

# The signing key: RSA (algorithm 1) of at least 4096 bits, able to sign.
sec=$(gpg --batch --with-colons --list-secret-keys -- "$key" | grep '^sec:' || true)
[ "$(printf '%s\n' "$sec" | wc -l)" -eq 1 ] && [ -n "$sec" ] || {
    echo "apt-repo.sh: $key names no secret key, or several, in ${GNUPGHOME:-~/.gnupg}" >&2
    exit 1
}
bits=$(printf '%s' "$sec" | cut -d: -f3)
algo=$(printf '%s' "$sec" | cut -d: -f4)
if [ "$algo" != 1 ] || [ "$bits" -lt 4096 ]; then
    echo "apt-repo.sh: $key is not an RSA key of 4096 bits or more (algorithm $algo, $bits bits)" >&2
    exit 1
fi
fpr=$(gpg --batch --with-colons --list-secret-keys -- "$key" | awk -F: '/^fpr:/ { print $10; exit }')
sign() {
    gpg --batch --yes --no-tty --local-user "$fpr!" --digest-algo SHA512 "$@"
}

mkdir -p "$out"
for deb in "$@"; do
    name=$(dpkg-deb --field "$deb" Package)
    dir="pool/$component/$(printf '%s' "$name" | cut -c1)/$name"
    mkdir -p "$out/$dir"
    file="$out/$dir/$(basename "$deb")"
    cp "$deb" "$file.tmp" && mv "$file.tmp" "$file"
    sign --armor --detach-sign --output "$file.asc" "$file"
done

cd "$out"
archs=$(for deb in $(find pool -name '*.deb' | sort); do dpkg-deb --field "$deb" Architecture; done | sort -u)
for arch in $archs; do
    [ "$arch" = all ] && continue
    index="dists/$suite/$component/binary-$arch"
    mkdir -p "$index"
    apt-ftparchive --arch "$arch" packages pool >"$index/Packages"
    gzip -9n <"$index/Packages" >"$index/Packages.gz"
    xz -9 <"$index/Packages" >"$index/Packages.xz"
done

release_archs=$(printf '%s\n' $archs | grep -vx all | tr '\n' ' ' | sed 's/ $//')
set -- \
    -o APT::FTPArchive::Release::Origin=strongroom \
    -o APT::FTPArchive::Release::Label=strongroom \
    -o APT::FTPArchive::Release::Suite="$suite" \
    -o APT::FTPArchive::Release::Codename="$suite" \
    -o APT::FTPArchive::Release::Architectures="$release_archs" \
    -o APT::FTPArchive::Release::Components="$component" \
    -o APT::FTPArchive::Release::Description="strongroom: encrypted, signed, deduplicating backups" \
    -o APT::FTPArchive::MD5=false -o APT::FTPArchive::SHA1=false \
    -o APT::FTPArchive::SHA256=true -o APT::FTPArchive::SHA512=true
if [ -n "$valid_days" ]; then
    set -- "$@" -o APT::FTPArchive::Release::ValidTime="$((valid_days * 86400))"
fi
rm -f "dists/$suite/Release" "dists/$suite/InRelease" "dists/$suite/Release.gpg"
apt-ftparchive "$@" release "dists/$suite" >"Release.tmp"
mv "Release.tmp" "dists/$suite/Release"
sign --clearsign --output "dists/$suite/InRelease" "dists/$suite/Release"
sign --armor --detach-sign --output "dists/$suite/Release.gpg" "dists/$suite/Release"

gpg --batch --export-options export-minimal --export -- "$fpr" >strongroom-archive-keyring.gpg
gpg --batch --export-options export-minimal --armor --export -- "$fpr" >strongroom-archive-keyring.asc
echo "signed $suite with $fpr ($bits-bit RSA)" >&2
echo "$(pwd)/strongroom-archive-keyring.gpg"
