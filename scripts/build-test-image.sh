#!/usr/bin/env bash
# Build a tiny busybox image locally, without any registry, and tag it as the
# default environment image (kohakuriver/kohakuriver-base:base) that a task
# without an explicit image runs in.
#
# Usage: scripts/build-test-image.sh [--force]   (--force: rebuild and retag)
set -euo pipefail

IMAGE=ferry-test/busybox:latest
BASE_TAG=kohakuriver/kohakuriver-base:base
BUSYBOX=/bin/busybox

say() { printf '[test-image] %s\n' "$*"; }
die() { printf '[test-image] ERROR: %s\n' "$*" >&2; exit 1; }

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

image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

if [[ $force -eq 0 && -n $(image_id "$IMAGE") ]]; then
  say "$IMAGE already exists (use --force to rebuild)"
else
  say "building $IMAGE from $BUSYBOX"
  old_id=$(image_id "$IMAGE")
  rootfs=$(mktemp -d /tmp/ferry-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT

  mkdir -p "$rootfs"/{bin,etc,proc,sys,dev,root,tmp}
  chmod 1777 "$rootfs/tmp"
  chmod 0700 "$rootfs/root"
  # Merged-/usr layout so /usr/bin/env, /sbin/... resolve too.
  mkdir -p "$rootfs/usr"
  ln -s ../bin "$rootfs/usr/bin"
  ln -s ../bin "$rootfs/usr/sbin"
  ln -s bin "$rootfs/sbin"

  cp "$BUSYBOX" "$rootfs/bin/busybox"
  chmod 0755 "$rootfs/bin/busybox"
  n=0
  while IFS= read -r applet; do
    [[ -z $applet || $applet == busybox || $applet == */* ]] && continue
    ln -sf busybox "$rootfs/bin/$applet"
    n=$((n + 1))
  done < <("$BUSYBOX" --list)
  [[ -L $rootfs/bin/sh ]] || die "busybox has no 'sh' applet"
  say "linked $n applets"

  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"

  # Numeric root ownership so the result does not depend on who builds it.
  tar --numeric-owner --owner=0 --group=0 -C "$rootfs" -c . |
    docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["/bin/sh"]' \
      --change 'LABEL ferry.test-image=busybox' \
      - "$IMAGE" >/dev/null
  say "imported $IMAGE"
fi

# Retag when missing, on --force, or when the tag still points at an older
# build of our own image; never silently replace a different, real base image.
img_id=$(image_id "$IMAGE")
base_id=$(image_id "$BASE_TAG")
base_label=$(docker image inspect --format '{{index .Config.Labels "ferry.test-image"}}' "$BASE_TAG" 2>/dev/null || true)
if [[ $base_id == "$img_id" ]]; then
  say "$BASE_TAG already points at $IMAGE"
elif [[ -z $base_id || $force -eq 1 || $base_label == busybox ]]; then
  docker tag "$IMAGE" "$BASE_TAG"
  say "tagged $IMAGE as $BASE_TAG"
else
  say "note: $BASE_TAG exists and is a different image; left as is (--force retags)"
fi

# A rebuild leaves the previous build untagged; drop it (fails harmlessly while in use).
if [[ -n ${old_id:-} && $old_id != "$img_id" ]]; then
  docker image rm "$old_id" >/dev/null 2>&1 || true
fi

out=$(docker run --rm "$IMAGE" sh -c 'echo ok' 2>&1) || die "test run of $IMAGE failed: $out"
[[ $out == ok ]] || die "test run of $IMAGE printed '$out', expected 'ok'"
say "verified: docker run --rm $IMAGE sh -c 'echo ok' -> ok"
