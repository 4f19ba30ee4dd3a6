#!/usr/bin/env bash
# nested-kvm.sh: the base initramfs (busybox, the guest's PID 1 from
# nested/init.sh, the kernel modules), cached by the scripts' and the
# kernel's contents.
# Sourced by scripts/nested-kvm.sh at this point of its run (its variables
# and functions are this file's); split out to keep each file to one job.
# ------------------------------------------------------------ base initramfs
cache_dir=${HV_NESTED_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/hv-nested}
key=$( { cat "$script_path" "$nested_dir"/*.sh; echo "$kver"; stat -c '%s %Y' "$busybox" "$moddir/modules.dep"; } |
       sha256sum | cut -c1-16)
base_cpio=$cache_dir/base-$kver-$key.cpio


# Resolve WANT_MODULES into mod_order: .ko paths relative to $moddir in load
# order, dependencies first.  Only needed when (re)building the base cpio.
declare -A mod_path=() mod_deps=() mod_seen=()
mod_order=()
add_module() {
    local name=${1//-/_} dep d deps
    [[ -n ${mod_seen[$name]:-} ]] && return
    [[ -n ${mod_path[$name]:-} ]] || die "kernel module $1 not found in $moddir/modules.dep"
    mod_seen[$name]=1
    # modules.dep lists dependencies so that the last must be loaded first.
    read -ra deps <<< "${mod_deps[$name]}"
    for ((d = ${#deps[@]} - 1; d >= 0; d--)); do
        dep=${deps[d]##*/}; add_module "${dep%%.ko*}"
    done
    mod_order+=("${mod_path[$name]}")
}
resolve_modules() {
    local line file name m
    while IFS= read -r line; do
        file=${line%%:*}
        name=${file##*/}; name=${name%%.ko*}; name=${name//-/_}
        mod_path[$name]=$file
        mod_deps[$name]=${line#*:}
    done < "$moddir/modules.dep"
    for m in "${WANT_MODULES[@]}"; do add_module "$m"; done
}

build_base_cpio() {
    local stage=$tmp/base m src
    resolve_modules
    mkdir -p "$cache_dir"
    mkdir -p "$stage"/{bin,dev,proc,sys,host,etc,hv,lib/modules}
    cp "$busybox" "$stage/bin/busybox"
    cp "$nested_dir/init.sh" "$stage/init"
    chmod 755 "$stage/init"
    : > "$stage/etc/hv-modules"
    for m in "${mod_order[@]}"; do
        src=$moddir/$m
        mkdir -p "$stage/lib/modules/${m%/*}"
        # busybox insmod wants a plain .ko; decompress if the kernel packs them.
        case $m in
            *.ko) cp "$src" "$stage/lib/modules/$m" ;;
            *.ko.xz) xz -dc "$src" > "$stage/lib/modules/${m%.xz}"; m=${m%.xz} ;;
            *.ko.zst) zstd -qdc "$src" > "$stage/lib/modules/${m%.zst}"; m=${m%.zst} ;;
            *.ko.gz) gzip -dc "$src" > "$stage/lib/modules/${m%.gz}"; m=${m%.gz} ;;
            *) die "unsupported module format: $m" ;;
        esac
        echo "$m" >> "$stage/etc/hv-modules"
    done
    partial=$(mktemp "$cache_dir/.base.XXXXXX")
    (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort |
        "$busybox" cpio -o -H newc 2>/dev/null) > "$partial"
    # Atomic rename: concurrent runs never see a partial archive.
    mv -f "$partial" "$base_cpio"
    partial=''
    rm -rf "$stage"
    # Drop archives of other script versions/kernels unused for a day.
    find "$cache_dir" -maxdepth 1 -name 'base-*.cpio' ! -name "${base_cpio##*/}" \
        -mtime +0 -delete 2>/dev/null || true
}
if [[ -s $base_cpio ]]; then
    touch "$base_cpio"   # mark as in use (see pruning above)
else
    build_base_cpio
fi
