#!/usr/bin/env bash
# Build a small OpenSSH-server image locally, without any registry, for the end-to-end
# tests of VPS tasks: Debian's openssh-server .deb from the apt mirror, its libraries from
# this host, static busybox for the rest. Ends by logging in over SSH to prove sshd works.
#
# Usage: scripts/build-vps-test-image.sh [--force]   (--force: rebuild)
set -euo pipefail

IMAGE=ferry-test/sshd:latest
BUSYBOX=/bin/busybox
CACHE=/var/cache/ferry-test-image
SSHD=/usr/sbin/sshd
HOST_KEY=/etc/ssh/ssh_host_ed25519_key

say() { printf '[vps-image] %s\n' "$*"; }
die() { printf '[vps-image] ERROR: %s\n' "$*" >&2; exit 1; }

force=0
for arg in "$@"; do
  case $arg in
    --force) force=1 ;;
    -h | --help) sed -n '2,6p' "$0"; exit 0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done

command -v docker >/dev/null 2>&1 || die "docker not found: run scripts/setup-docker.sh first"
[[ -x $BUSYBOX ]] || die "$BUSYBOX not found: run scripts/setup-docker.sh first (package busybox-static)"

# Where time goes: each lap prints the time since the previous one.
now_ms() {
  if [[ -n ${EPOCHREALTIME:-} ]]; then
    local us=${EPOCHREALTIME//[.,]/}
    printf '%s' $((us / 1000))
  else
    date +%s%3N
  fi
}
t_start=$(now_ms)
t_lap=$t_start
lap() {
  local t
  t=$(now_ms)
  say "$(printf '%-34s %6d ms' "$1" $((t - t_lap)))"
  t_lap=$t
}

work=""
ctr=""
cleanup() {
  if [[ -n $ctr ]]; then docker rm -f "$ctr" >/dev/null 2>&1 || true; fi
  if [[ -n $work ]]; then rm -rf "$work"; fi
}
trap cleanup EXIT

image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

# The newest cached .deb of package $1 (fails when there is none).
cached_deb() {
  local files=()
  shopt -s nullglob
  files=("$CACHE/$1"_*.deb)
  shopt -u nullglob
  ((${#files[@]})) || return 1
  printf '%s\n' "${files[@]}" | sort -V | tail -n 1
}

# Downloads the named packages that are not cached yet into $CACHE (through a scratch
# directory, so an interrupted download never leaves a truncated .deb in the cache).
fetch_debs() {
  local missing=() p out dl
  for p in "$@"; do cached_deb "$p" >/dev/null || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: cannot download ${missing[*]}"
  out=$(apt-cache policy "${missing[0]}" 2>/dev/null || true)
  if [[ $out != *"Candidate: "[^\(]* ]]; then
    say "apt lists lack ${missing[0]}: apt-get update"
    apt-get update -qq >/dev/null || die "apt-get update failed"
  fi
  mkdir -p "$CACHE"
  dl=$(mktemp -d "$CACHE/partial.XXXXXX")
  if ! out=$(cd "$dl" && apt-get -q -o APT::Sandbox::User=root download "${missing[@]}" 2>&1); then
    # Stale lists point at files the mirror no longer has: refresh once and retry.
    apt-get update -qq >/dev/null || true
    out=$(cd "$dl" && apt-get -q -o APT::Sandbox::User=root download "${missing[@]}" 2>&1) || {
      rm -rf "$dl"
      die "apt-get download ${missing[*]} failed: $out"
    }
  fi
  mv "$dl"/*.deb "$CACHE/"
  rm -rf "$dl"
  say "downloaded ${missing[*]} into $CACHE"
}

# Library packages a .deb depends on that this host lacks, or has older than required:
# they are unpacked next to sshd so ldd resolves against them.
lib_deps_to_fetch() {
  local dep name op ver have
  while IFS= read -r dep; do
    dep=${dep%%|*}                       # first of alternatives
    read -r name op ver <<<"$(sed 's/[()]//g; s/:any//' <<<"$dep")"
    [[ $name == lib* || $name == zlib* ]] || continue
    [[ $name == libpam-modules* || $name == libpam-runtime ]] && continue   # UsePAM no
    have=$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null || true)
    if [[ $have != "install ok installed "* ]]; then
      printf '%s\n' "$name"
    elif [[ $op == ">=" ]] && ! dpkg --compare-versions "${have##* }" ge "$ver"; then
      [[ $name == libc6 ]] && die "host glibc ${have##* } is older than sshd needs ($ver)"
      printf '%s\n' "$name"
    fi
  done < <(dpkg-deb -f "$1" Depends | tr ',' '\n')
}

if [[ $force -eq 0 && -n $(image_id "$IMAGE") ]]; then
  say "$IMAGE already exists (use --force to rebuild)"
else
  say "building $IMAGE from Debian's openssh-server and $BUSYBOX"
  for tool in dpkg dpkg-deb ldd; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found: this script needs a Debian host"
  done
  old_id=$(image_id "$IMAGE")
  work=$(mktemp -d /tmp/ferry-vps-rootfs.XXXXXX)
  stage=$work/stage
  rootfs=$work/rootfs
  mkdir -p "$stage" "$rootfs"

  # 1. The packages (cached), then any library package the host cannot provide.
  pkgs=(openssh-server openssh-sftp-server)
  fetch_debs "${pkgs[@]}"
  i=0
  while ((i < ${#pkgs[@]})); do
    deb=$(cached_deb "${pkgs[i]}")
    dpkg-deb -x "$deb" "$stage" || die "cannot unpack $deb (delete it from $CACHE and rerun)"
    deps=$(lib_deps_to_fetch "$deb")
    for dep in $deps; do
      [[ " ${pkgs[*]} " == *" $dep "* ]] && continue
      pkgs+=("$dep")
      fetch_debs "$dep"
    done
    i=$((i + 1))
  done
  lap "packages (${pkgs[*]})"

  # 2. The rootfs: busybox with every applet, merged /usr (usr/bin, usr/sbin -> ../bin,
  # usr/lib -> ../lib, sbin -> bin), so /usr/sbin/sshd is /bin/sshd.
  mkdir -p "$rootfs"/{bin,etc/ssh,lib,lib64,proc,sys,dev,root,tmp,run/sshd,var/log,usr}
  chmod 1777 "$rootfs/tmp"
  chmod 0700 "$rootfs/root"
  chmod 0755 "$rootfs/run/sshd"
  ln -s ../bin "$rootfs/usr/bin"
  ln -s ../bin "$rootfs/usr/sbin"
  ln -s ../lib "$rootfs/usr/lib"
  ln -s bin "$rootfs/sbin"
  ln -s ../run "$rootfs/var/run"

  cp "$BUSYBOX" "$rootfs/bin/busybox"
  chmod 0755 "$rootfs/bin/busybox"
  n=0
  while IFS= read -r applet; do
    [[ -z $applet || $applet == busybox || $applet == */* ]] && continue
    ln -sf busybox "$rootfs/bin/$applet"
    n=$((n + 1))
  done < <("$BUSYBOX" --list)
  [[ -L $rootfs/bin/sh ]] || die "busybox has no 'sh' applet"
  if [[ ! -e $rootfs/bin/nologin ]]; then
    printf '#!/bin/sh\necho "This account is currently not available."\nexit 1\n' >"$rootfs/bin/nologin"
    chmod 0755 "$rootfs/bin/nologin"
  fi
  say "linked $n applets"

  # 3. sshd, sftp-server, and every library ldd resolves for them (the host's, or the
  # staged .deb's), each at the path the loader looks in.
  elfs=("$stage/usr/sbin/sshd")
  [[ -x ${elfs[0]} ]] || die "openssh-server .deb has no usr/sbin/sshd"
  install -m 0755 "$stage/usr/sbin/sshd" "$rootfs$SSHD"
  if [[ -x $stage/usr/lib/openssh/sftp-server ]]; then
    elfs+=("$stage/usr/lib/openssh/sftp-server")
    install -D -m 0755 "$stage/usr/lib/openssh/sftp-server" "$rootfs/usr/lib/openssh/sftp-server"
  fi
  if [[ -f $stage/etc/ssh/moduli ]]; then
    install -m 0644 "$stage/etc/ssh/moduli" "$rootfs/etc/ssh/moduli"
  fi
  libpath=""
  for d in "$stage"/lib/*-linux-gnu "$stage"/usr/lib/*-linux-gnu; do
    [[ -d $d ]] && libpath+=${libpath:+:}$d
  done
  ldd_out=$(LD_LIBRARY_PATH=$libpath ldd "${elfs[@]}") || die "ldd ${elfs[*]} failed"
  unresolved=$(awk '$2 == "=>" && $3 == "not" {print $1}' <<<"$ldd_out" | sort -u | tr '\n' ' ')
  [[ -z $unresolved ]] || die "no library for: $unresolved(install its package on this host)"
  libs=0
  while IFS= read -r lib; do
    dest=${lib#"$stage"}
    mkdir -p "$rootfs$(dirname "$dest")"
    cp -L "$lib" "$rootfs$dest"
    libs=$((libs + 1))
  done < <(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $2 ~ /^\(0x/ {print $1}' <<<"$ldd_out" | sort -u)
  say "copied sshd${elfs[1]:+, sftp-server} and $libs libraries"

  # 4. Accounts and sshd's configuration. Root's password is '*' (no password, but not
  # locked: with UsePAM no, sshd refuses a key login to an account whose hash starts '!').
  cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
sshd:x:100:65534::/run/sshd:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
  cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
tty:x:5:
nogroup:x:65534:
EOF
  cat >"$rootfs/etc/shadow" <<'EOF'
root:*:19000:0:99999:7:::
sshd:*:19000:0:99999:7:::
nobody:*:19000:0:99999:7:::
EOF
  chmod 0600 "$rootfs/etc/shadow"
  # Login records sshd writes for a terminal session (it complains when they are missing).
  : >"$rootfs/var/log/lastlog"
  : >"$rootfs/var/log/wtmp"
  : >"$rootfs/run/utmp"
  install -m 0600 /dev/null "$rootfs/var/log/btmp"
  chmod 0664 "$rootfs/var/log/lastlog" "$rootfs/var/log/wtmp" "$rootfs/run/utmp"
  printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
  # No host key is baked in: the runner writes $HOST_KEY (and /run/sshd) before start.
  {
    printf '# Ferry VPS test image: Debian OpenSSH without PAM; the runner adds -h and -o options.\n'
    printf 'HostKey %s\n' "$HOST_KEY"
    printf 'UsePAM no\n'
    printf 'PermitRootLogin prohibit-password\n'
    printf 'PubkeyAuthentication yes\n'
    printf 'AuthorizedKeysFile .ssh/authorized_keys\n'
    printf 'PasswordAuthentication no\n'
    printf 'KbdInteractiveAuthentication no\n'
    printf 'PrintMotd no\n'
    printf 'PrintLastLog no\n'
    if [[ -x $rootfs/usr/lib/openssh/sftp-server ]]; then
      printf 'Subsystem sftp /usr/lib/openssh/sftp-server\n'
    fi
  } >"$rootfs/etc/ssh/sshd_config"
  chmod 0644 "$rootfs/etc/ssh/sshd_config"
  [[ -x $rootfs$SSHD ]] || die "$SSHD does not resolve in the rootfs"
  lap "rootfs"

  # Numeric root ownership so the result does not depend on who builds it.
  tar --numeric-owner --owner=0 --group=0 -C "$rootfs" -c . |
    docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'EXPOSE 22/tcp' \
      --change 'CMD ["/bin/sh"]' \
      --change 'LABEL ferry.test-image=sshd' \
      - "$IMAGE" >/dev/null
  rm -rf "$work"
  work=""
  lap "docker import $IMAGE"
fi

# A rebuild leaves the previous build untagged; drop it (fails harmlessly while in use).
img_id=$(image_id "$IMAGE")
if [[ -n ${old_id:-} && $old_id != "$img_id" ]]; then
  docker image rm "$old_id" >/dev/null 2>&1 || true
fi

out=$(docker run --rm "$IMAGE" sh -c 'echo ok' 2>&1) || die "test run of $IMAGE failed: $out"
[[ $out == ok ]] || die "test run of $IMAGE printed '$out', expected 'ok'"
say "verified: docker run --rm $IMAGE sh -c 'echo ok' -> ok"
lap "docker run echo ok"

# Prove sshd works the way the runner starts it: a created container, the host key and
# root's authorized key copied in, then started under init with port 22 on loopback.
if ! command -v ssh >/dev/null 2>&1 || ! command -v ssh-keygen >/dev/null 2>&1; then
  say "installing openssh-client for the check"
  apt-get install -y -qq --no-install-recommends openssh-client >/dev/null ||
    die "cannot install openssh-client"
fi
work=$(mktemp -d /tmp/ferry-vps-check.XXXXXX)
mkdir -p "$work/ctx/etc/ssh" "$work/ctx/root/.ssh"
chmod 0700 "$work/ctx/root/.ssh"
ssh-keygen -q -t ed25519 -N '' -C ferry-test-host -f "$work/ctx$HOST_KEY"
ssh-keygen -q -t ed25519 -N '' -C ferry-test-client -f "$work/client"
chmod 0600 "$work/ctx$HOST_KEY"
install -m 0600 "$work/client.pub" "$work/ctx/root/.ssh/authorized_keys"

# The runner's key-mode command (runner/src/supervisor/vps.rs), plus a second port for
# its 'none' mode (empty root password) checked below.
ctr=$(docker create --init --label ferry.test-image-check=sshd \
  -p 127.0.0.1::22 -p 127.0.0.1::2222 "$IMAGE" \
  "$SSHD" -D -e -h "$HOST_KEY" \
  -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no \
  -o KbdInteractiveAuthentication=no -o PubkeyAuthentication=yes \
  -o AuthorizedKeysFile=.ssh/authorized_keys)
docker cp "$ctr:$SSHD" - | tar -t >/dev/null 2>&1 || die "$SSHD not found in $IMAGE through docker cp"
tar --numeric-owner --owner=0 --group=0 -C "$work/ctx" -c "${HOST_KEY#/}" root/.ssh |
  docker cp - "$ctr:/"
docker start "$ctr" >/dev/null
port_of() {
  local p
  p=$(docker port "$ctr" "$1/tcp" | head -n 1)
  [[ $p == 127.0.0.1:* ]] || die "container port $1 is not published on 127.0.0.1: '$p'"
  printf '%s' "${p##*:}"
}
port=$(port_of 22)
none_port=$(port_of 2222)
lap "container up (loopback port $port)"

# Pin the uploaded host key: the login must reach this sshd with this key, nothing else.
printf '[127.0.0.1]:%s %s\n[127.0.0.1]:%s %s\n' \
  "$port" "$(cut -d' ' -f1,2 "$work/ctx$HOST_KEY.pub")" \
  "$none_port" "$(cut -d' ' -f1,2 "$work/ctx$HOST_KEY.pub")" >"$work/known_hosts"
ssh_opts=(-F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes
  -o "UserKnownHostsFile=$work/known_hosts" -o ConnectTimeout=5 -o LogLevel=ERROR)
login_ok() { # port, ssh options...
  local p=$1 i out
  shift
  for i in $(seq 50); do
    if out=$(ssh "${ssh_opts[@]}" "$@" -p "$p" root@127.0.0.1 echo ok 2>>"$work/ssh.err") &&
      [[ $out == ok ]]; then
      return 0
    fi
    sleep 0.2
  done
  return 1
}
show_failure() {
  say "ssh said:"; sed 's/^/    /' "$work/ssh.err" >&2 || true
  say "container log:"; docker logs "$ctr" 2>&1 | tail -n 20 | sed 's/^/    /' >&2 || true
  die "$1"
}

login_ok "$port" -o IdentitiesOnly=yes -i "$work/client" ||
  show_failure "ssh -i KEY root@127.0.0.1 -p $port echo ok did not print ok within 10 s"
say "verified: ssh (key) root@127.0.0.1:$port echo ok -> ok"

tty_out=$(ssh "${ssh_opts[@]}" -tt -o IdentitiesOnly=yes -i "$work/client" -p "$port" \
  root@127.0.0.1 tty 2>>"$work/ssh.err" | tr -d '\r') || show_failure "ssh -tt (terminal session) failed"
[[ $tty_out == /dev/pts/* ]] || die "a terminal session printed '$tty_out', expected /dev/pts/N"
say "verified: terminal session (ssh -tt tty -> $tty_out)"

cfg=$(docker exec "$ctr" "$SSHD" -t -h "$HOST_KEY" 2>&1) || die "sshd -t failed: $cfg"
[[ -z $cfg ]] || say "sshd -t printed: $cfg"
say "verified: sshd -t (config test) passes"

if command -v sftp >/dev/null 2>&1 && docker exec "$ctr" test -x /usr/lib/openssh/sftp-server; then
  sftp_out=$(printf 'pwd\n' | sftp "${ssh_opts[@]}" -o IdentitiesOnly=yes -i "$work/client" \
    -b - -P "$port" root@127.0.0.1 2>>"$work/ssh.err") ||
    show_failure "sftp to 127.0.0.1:$port failed"
  [[ $sftp_out == *"Remote working directory: /root"* ]] ||
    die "sftp printed '$sftp_out', expected the remote working directory /root"
  say "verified: sftp subsystem (pwd -> /root)"
fi

# The runner's 'none' mode: root's password emptied in /etc/shadow, no key needed.
docker exec "$ctr" sed -i 's/^root:[^:]*:/root::/' /etc/shadow
docker exec -d "$ctr" "$SSHD" -D -e -h "$HOST_KEY" -p 2222 -o PidFile=/run/sshd-2222.pid \
  -o PermitRootLogin=yes -o PasswordAuthentication=yes -o PermitEmptyPasswords=yes
login_ok "$none_port" -o PubkeyAuthentication=no ||
  show_failure "ssh (empty password) root@127.0.0.1 -p $none_port echo ok did not print ok"
say "verified: ssh (empty root password, 'none' mode) root@127.0.0.1:$none_port echo ok -> ok"
lap "ssh checks"

docker rm -f "$ctr" >/dev/null
ctr=""
say "$IMAGE ready ($(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.1f MB", $1 / 1e6}'), $(( $(now_ms) - t_start )) ms in all)"
