#!/usr/bin/env bash
# Make sure Docker (client + daemon) and a static busybox are installed, and that
# dockerd answers. Idempotent; works when executed or sourced (when sourced it
# runs in a subshell, so it neither changes the caller's shell options nor exits it).
#
# Env: FERRY_DOCKERD_WAIT  seconds to wait for dockerd to answer (default 60)
#      FERRY_DOCKERD_LOG   dockerd log when we start it (default /tmp/ferry-dockerd.log)

_ferry_setup_docker() (
  set -euo pipefail

  say() { printf '[setup-docker] %s\n' "$*"; }
  die() { printf '[setup-docker] ERROR: %s\n' "$*" >&2; exit 1; }

  wait_s=${FERRY_DOCKERD_WAIT:-60}
  dockerd_log=${FERRY_DOCKERD_LOG:-/tmp/ferry-dockerd.log}

  # apt needs root; use sudo when we are not root and it exists.
  SUDO=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "not root and sudo is missing: cannot install packages or start dockerd"
    SUDO=(sudo)
  fi

  apt_updated=0
  apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand"
    if [[ $apt_updated -eq 0 ]]; then
      say "apt-get update"
      "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
      apt_updated=1
    fi
    say "apt-get install $*"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  }

  # A static busybox is what the test image is built from (no registry needed).
  busybox_ok() {
    [[ -x /bin/busybox ]] || return 1
    /bin/busybox --list >/dev/null 2>&1 || return 1
    # ldd fails on a static binary ("not a dynamic executable").
    ! ldd /bin/busybox >/dev/null 2>&1
  }

  docker_answers() { timeout 10 docker info >/dev/null 2>&1; }

  dockerd_running() {
    local c
    for c in /proc/[0-9]*/comm; do
      [[ $(cat "$c" 2>/dev/null) == dockerd ]] && return 0
    done
    return 1
  }

  if command -v docker >/dev/null 2>&1 && command -v dockerd >/dev/null 2>&1; then
    say "docker installed: $(command -v docker)"
  else
    apt_install docker.io
  fi

  if busybox_ok; then
    say "static busybox present: /bin/busybox"
  else
    apt_install busybox-static
    busybox_ok || die "/bin/busybox is missing or not static after installing busybox-static"
  fi

  if docker_answers; then
    say "dockerd answers"
    exit 0
  fi

  if dockerd_running; then
    say "dockerd process found but not answering yet; waiting"
  elif [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
    say "starting docker.service via systemd"
    "${SUDO[@]}" systemctl start docker.service || die "systemctl start docker failed (see: journalctl -u docker)"
  else
    # No systemd (containers, CI sandboxes): run dockerd ourselves, in its own
    # session so a Ctrl-C in the calling terminal does not stop it.
    say "starting dockerd in the background (log: $dockerd_log)"
    detach=()
    command -v setsid >/dev/null 2>&1 && detach=(setsid)
    "${SUDO[@]}" "${detach[@]}" nohup dockerd >>"$dockerd_log" 2>&1 </dev/null &
  fi

  deadline=$((SECONDS + wait_s))
  until docker_answers; do
    if ((SECONDS >= deadline)); then
      [[ -f $dockerd_log ]] && tail -n 20 "$dockerd_log" >&2
      die "dockerd did not answer 'docker info' within ${wait_s}s (log: $dockerd_log)"
    fi
    sleep 1
  done
  say "dockerd answers"
)

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -euo pipefail
  _ferry_setup_docker "$@"
else
  _ferry_setup_docker "$@" || return
fi
