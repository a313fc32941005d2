#!/usr/bin/env bash
# Builds the Debian package target/debian/dfs_VERSION-1_ARCH.deb and checks it:
#   * the release binary, man pages and shell completions generated from it, the systemd units
#     and example configs of deploy/ (metadata: [package.metadata.deb] in Cargo.toml);
#   * its file list and conffiles (dpkg-deb);
#   * `systemd-analyze verify` on the units as packaged, their ExecStart pointed at the packaged
#     binary in a temporary folder and their man: links at the packaged man pages, so nothing
#     is installed on this machine. Any output of verify (even a warning) fails.
# Installs cargo-deb and systemd-analyze when missing (the latter through apt, as root).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deb >/dev/null 2>&1; then
  cargo install cargo-deb --locked
fi
if ! command -v systemd-analyze >/dev/null 2>&1 || ! command -v dpkg-shlibdeps >/dev/null 2>&1; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd dpkg-dev
fi

cargo build --release --locked --bin dfs
assets=target/assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
target/release/dfs man --out "$assets/man"
gzip -9n "$assets"/man/*.1
target/release/dfs completions bash >"$assets/completions/dfs.bash"
target/release/dfs completions zsh >"$assets/completions/_dfs"
target/release/dfs completions fish >"$assets/completions/dfs.fish"

rm -f target/debian/dfs_*.deb
cargo deb --no-build --strip --package dfs
deb=$(ls target/debian/dfs_*.deb)
echo "built $deb"

fail() {
  echo "package check: $*" >&2
  exit 1
}

contents=$(dpkg-deb -c "$deb" | awk '{ print $NF }')
for path in \
  ./usr/bin/dfs \
  ./lib/systemd/system/dfs-storage.service \
  ./lib/systemd/system/dfs-broker.service \
  ./lib/systemd/system/dfs-watch.service \
  ./lib/systemd/system/dfs-watch@.service \
  ./lib/systemd/system/dfs-web.service \
  ./etc/dfs/storage.toml ./etc/dfs/broker.toml ./etc/dfs/watch.toml ./etc/dfs/web.toml \
  ./usr/share/man/man1/dfs.1.gz ./usr/share/man/man1/dfs-storage.1.gz \
  ./usr/share/man/man1/dfs-broker.1.gz ./usr/share/man/man1/dfs-watch.1.gz \
  ./usr/share/man/man1/dfs-fetch.1.gz \
  ./usr/share/bash-completion/completions/dfs \
  ./usr/share/zsh/vendor-completions/_dfs \
  ./usr/share/fish/vendor_completions.d/dfs.fish; do
  grep -qxF "$path" <<<"$contents" || fail "$deb lacks $path"
done
conffiles=$(dpkg-deb -I "$deb" conffiles)
for conf in /etc/dfs/storage.toml /etc/dfs/broker.toml /etc/dfs/watch.toml /etc/dfs/web.toml; do
  grep -qxF "$conf" <<<"$conffiles" || fail "$conf is not a conffile of $deb"
done

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root"
"$root/usr/bin/dfs" --version >/dev/null || fail "the packaged binary does not run"
mkdir "$root/units"
for unit in "$root"/lib/systemd/system/*.service; do
  sed "s#/usr/bin/dfs #$root/usr/bin/dfs #" "$unit" >"$root/units/$(basename "$unit")"
done
# With `man` present, verify checks each Documentation=man: page among the packaged ones.
man_check=--man=no
if command -v man >/dev/null 2>&1; then
  man_check=--man=yes
fi
report=$(MANPATH="$root/usr/share/man" systemd-analyze verify "$man_check" "$root"/units/*.service 2>&1) ||
  fail "systemd-analyze verify failed: $report"
[ -z "$report" ] || fail "systemd-analyze verify: $report"
echo "package check: $(wc -l <<<"$contents") paths, conffiles and units verified ($man_check)"
