#!/usr/bin/env bash
# peers.sh: check the test peers of tests/peers.list and install the missing ones.
#
#   bash tests/peers.sh [--check] GROUP...
#
# For each peer of the named groups (test, bench) it runs the peer's check:
#   cmd:NAME   the program NAME is on PATH
#   py:MODULE  python3 imports MODULE
# Missing peers are installed with the package managers that are there: Python modules
# with `python3 -m pip`, programs with `apt-get` (as root, or through `sudo -n`), running
# `apt-get update` only when an install fails without it. It prints one line that says
# what it installed, and exits 0 when every peer is there.
#
# When a peer cannot be installed (no root, no package manager, no network), it prints
# the exact commands to run by hand and exits 1, so that `make test` stops before the
# build and not in the middle of the suite.
#
# --check only reports: it installs nothing, prints each missing peer with the command
# that would install it, and exits 1 if any is missing.
#
# It uses bash builtins only, besides python3, pip, apt-get and sudo, so that it can be
# run with a PATH from which the peers are hidden (tests/peers.rs does that).
set -uo pipefail

SELF=${BASH_SOURCE[0]}
HERE=.
[[ $SELF == */* ]] && HERE=${SELF%/*}
LIST=$HERE/peers.list
CHECK_ONLY=0
GROUPS_WANTED=()
for arg in "$@"; do
    case $arg in
    --check) CHECK_ONLY=1 ;;
    -h | --help)
        while IFS= read -r line; do # the comment block at the top
            [[ $line == '#!'* ]] && continue
            [[ $line == '#'* ]] || break
            line=${line#\#}
            printf '%s\n' "${line# }"
        done <"$SELF"
        exit 0
        ;;
    -*)
        printf 'peers: unknown option %s (try --help)\n' "$arg" >&2
        exit 2
        ;;
    *) GROUPS_WANTED+=("$arg") ;;
    esac
done
if ((${#GROUPS_WANTED[@]} == 0)); then
    printf 'peers: name a group (test, bench); try --help\n' >&2
    exit 2
fi
if [[ ! -r $LIST ]]; then
    printf 'peers: cannot read %s\n' "$LIST" >&2
    exit 2
fi

join() { # join ITEM...: the items separated by ", "
    local out="" i
    for i in "$@"; do out+="${out:+, }$i"; done
    printf '%s' "$out"
}

wanted() { # wanted GROUP: is GROUP one of the groups asked for?
    local g
    for g in "${GROUPS_WANTED[@]}"; do [[ $g == "$1" ]] && return 0; done
    return 1
}

present() { # present CHECK: does the peer answer its check?
    case $1 in
    cmd:*) command -v "${1#cmd:}" >/dev/null 2>&1 ;;
    py:*) command -v python3 >/dev/null 2>&1 && python3 -c "import ${1#py:}" >/dev/null 2>&1 ;;
    *) return 2 ;;
    esac
}

hand_command() { # hand_command CHECK APT PIP: the command a person would run
    if [[ $1 == py:* && $3 != - ]]; then
        printf 'python3 -m pip install %s' "$3"
    else
        printf 'apt-get install -y %s' "$2"
    fi
}

# Read the list: the missing peers of the wanted groups, each once.
MISSING=() # "name check apt pip" per missing peer
SEEN=" "
TOTAL=0
while read -r group name check apt pip _why; do
    [[ -z ${group:-} || $group == \#* ]] && continue
    wanted "$group" || continue
    [[ $SEEN == *" $name "* ]] && continue
    SEEN+="$name "
    TOTAL=$((TOTAL + 1))
    present "$check"
    case $? in
    0) ;;
    2)
        printf 'peers: %s: bad check "%s" for %s\n' "$LIST" "$check" "$name" >&2
        exit 2
        ;;
    *) MISSING+=("$name $check $apt $pip") ;;
    esac
done <"$LIST"

GROUP_NAMES="${GROUPS_WANTED[*]}"
if ((${#MISSING[@]} == 0)); then
    printf 'peers: all %d %s peers are present\n' "$TOTAL" "$GROUP_NAMES"
    exit 0
fi

if ((CHECK_ONLY)); then
    for m in "${MISSING[@]}"; do
        read -r name check apt pip <<<"$m"
        printf 'peers: missing %s (install: %s)\n' "$name" "$(hand_command "$check" "$apt" "$pip")"
    done
    exit 1
fi

# How to run apt-get: as root, through a sudo that asks no password, or not at all.
APT=()
if command -v apt-get >/dev/null 2>&1; then
    if ((EUID == 0)); then
        APT=(apt-get)
    elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
        APT=(sudo -n apt-get)
    fi
fi
APT_UPDATED=0

apt_install() { # apt_install PACKAGE: install, with one `apt-get update` if that fails
    ((${#APT[@]})) || return 1
    DEBIAN_FRONTEND=noninteractive "${APT[@]}" install -y -qq "$1" >/dev/null 2>&1 && return 0
    if ((!APT_UPDATED)); then
        APT_UPDATED=1
        "${APT[@]}" update -qq >/dev/null 2>&1 || return 1
        DEBIAN_FRONTEND=noninteractive "${APT[@]}" install -y -qq "$1" >/dev/null 2>&1 && return 0
    fi
    return 1
}

pip_install() { # pip_install MODULE: into this python3, or for this user
    command -v python3 >/dev/null 2>&1 || return 1
    python3 -m pip install --quiet "$1" >/dev/null 2>&1 && return 0
    python3 -m pip install --quiet --user "$1" >/dev/null 2>&1
}

INSTALLED=()
FAILED=()
for m in "${MISSING[@]}"; do
    read -r name check apt pip <<<"$m"
    how=""
    if [[ $check == py:* && $pip != - ]] && pip_install "$pip" && present "$check"; then
        how="pip"
    elif [[ $apt != - ]] && apt_install "$apt" && present "$check"; then
        how="apt"
    fi
    if [[ -n $how ]]; then
        INSTALLED+=("$name ($how)")
    else
        FAILED+=("$m")
    fi
done

if ((${#FAILED[@]})); then
    if ((${#INSTALLED[@]})); then
        printf 'peers: installed %s\n' "$(join "${INSTALLED[@]}")"
    fi
    why=()
    command -v python3 >/dev/null 2>&1 || why+=("python3 is not on PATH")
    if ! command -v apt-get >/dev/null 2>&1; then
        why+=("apt-get is not on PATH")
    elif ((${#APT[@]} == 0)); then
        why+=("apt-get needs root or a password-less sudo")
    fi
    ((${#why[@]})) || why+=("the installs failed (is the package registry reachable?)")
    why=$(join "${why[@]}")
    printf 'peers: cannot install the missing %s peers: %s. Install them by hand, then run again:\n' \
        "$GROUP_NAMES" "$why" >&2
    for m in "${FAILED[@]}"; do
        read -r name check apt pip <<<"$m"
        printf '    %-40s # %s\n' "$(hand_command "$check" "$apt" "$pip")" "$name" >&2
    done
    exit 1
fi

printf 'peers: installed %s; all %d %s peers are present\n' "$(join "${INSTALLED[@]}")" "$TOTAL" "$GROUP_NAMES"
