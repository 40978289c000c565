#!/bin/sh
# Hot backup for cron, `docker exec` or compose: a new dated backup in DIR,
# then only the newest KEEP backups are kept. The server may keep running.
#
#   ops/backup.sh [-c CONFIG] [-k KEEP] DIR
#
# Exit status: 0 backup written and verified; 1 usage; 2 backup failed;
# 3 the new backup does not verify (it is left in place for inspection).
set -eu
usage() { echo "usage: $0 [-c CONFIG] [-k KEEP] DIR" >&2; exit 1; }
config="${MAILRAVEN_CONFIG:-}"
keep=7
while getopts "c:k:h" opt; do
    case "$opt" in
        c) config="$OPTARG" ;;
        k) keep="$OPTARG" ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 1 ] || usage
case "$keep" in ''|*[!0-9]*) usage ;; esac
dir="$1"
mailraven=${MAILRAVEN:-mailraven}
set -- ${config:+--config "$config"}
target="$dir/mailraven-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$dir"
# MAILRAVEN may be a command with arguments (word-split on purpose), e.g.
# "docker compose exec -T mailraven mailraven" for the container.
$mailraven "$@" backup --to "$target" || exit 2
$mailraven "$@" verify --backup "$target" || exit 3
# retention: newest first, drop everything after the first $keep
ls -1d "$dir"/mailraven-* 2>/dev/null | sort -r | tail -n +"$((keep + 1))" | while read -r old; do
    [ -f "$old/manifest.json" ] && rm -rf "$old"
done
echo "$target"
