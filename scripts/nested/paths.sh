#!/usr/bin/env bash
# nested-kvm.sh: the check that every path on COMMAND is visible in the guest.
# Sourced by scripts/nested-kvm.sh at this point of its run (its variables
# and functions are this file's); split out to keep each file to one job.
# ------------------------------------------------------- paths on COMMAND
# COMMAND runs at the same path in the guest; the guest's own /tmp, /run,
# /dev, /proc, /sys hide the host's, so the caller cannot be there (unless in
# the project, which is mounted on top).
if [[ $cwd != "$project_dir" && $cwd != "$project_dir"/* ]]; then
    case $cwd/ in
        /tmp/*|/run/*|/proc/*|/sys/*|/dev/*)
            die "working directory $cwd does not exist in the guest (its /tmp,/run,/dev,/proc,/sys are fresh); run from the project dir or another host path" ;;
    esac
fi
[[ $project_dir != *$'\n'* && $cwd != *$'\n'* ]] || die "paths with newlines are not supported"

# COMMAND's paths must name the same files in the guest. It sees this host's
# root (read-only) and the project (read-write) at the same paths, but its
# own fresh /tmp and /run (tmpfs), its own /dev (devtmpfs, with /dev/shm and
# /dev/pts of its own), and none of our file descriptors. So each word of
# COMMAND, and the VALUE of an -OPTION=VALUE or --OPTION=VALUE word (e.g.
# libFuzzer's -artifact_prefix=DIR), that names an existing file or contains
# a '/' is resolved here (lexically and through symlinks), and one that would
# be missing or a different file there is an error.
# Device nodes (/dev/null, /dev/kvm), /proc and /sys are the guest's own on
# purpose (e.g. /proc/kallsyms) and pass.
# Prints why PATH (absolute) is not visible in the guest; fails if it is.
not_visible() {
    case $1 in
        "$project_dir"|"$project_dir"/*) return 1 ;;
        /dev/fd/*|/dev/stdin|/dev/stdout|/dev/stderr|/proc/self/fd/*|/proc/thread-self/fd/*|/proc/[0-9]*/fd/*)
            echo "it is a file descriptor of this shell (a pipe, or <(...)?), and the nested host has none of this shell's descriptors" ;;
        /tmp/*|/run/*)
            local top=${1#/}; top=/${top%%/*}
            echo "$top in the nested host is its own, empty tmpfs" ;;
        /dev/shm/*|/dev/pts/*|/dev/mqueue/*)
            echo "/dev in the nested host is its own devtmpfs" ;;
        *) return 1 ;;
    esac
}
check_path() { # PATH N WORD: PATH is WORD or its VALUE, N WORD's place in COMMAND
    local path=$1 word=$3 abs lexical resolved why
    [[ -n $path && $path != -* ]] || return 0
    if [[ $path == /* ]]; then abs=$path; else abs=$cwd/$path; fi
    # A plain word is a path only when such a file exists.
    [[ $path == */* || -e $abs || -L $abs ]] || return 0
    lexical=$(realpath -m -s -- "$abs") resolved=$(realpath -m -- "$abs")
    why=$(not_visible "$lexical") || why=$(not_visible "$resolved") || return 0
    [[ $resolved == "$lexical" ]] || why="$why (it resolves to $resolved)"
    echo "$PROG: word $2 of COMMAND, '$word', is not visible in the nested host: $why." >&2
    echo "Shared with it: this host's root read-only, and the project directory $project_dir read-write (put the file there), at the same paths. (--no-path-check skips this check.)" >&2
    exit "$EXIT_USAGE"
}
if ((path_check)); then
    argn=1
    for word in "$@"; do
        check_path "$word" "$argn" "$word"   # (not an -OPTION)
        [[ $word != -*=* ]] || check_path "${word#*=}" "$argn" "$word"
        argn=$((argn + 1))
    done
fi
