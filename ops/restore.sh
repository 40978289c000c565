#!/bin/sh
# Restore a backup into a data dir (the server must be stopped, or pointed at
# the new dir afterwards). The backup is verified first; a non-empty target is
# refused unless -f is given.
#
#   ops/restore.sh [-c CONFIG] [-d DATA_DIR] [-f] BACKUP_DIR
#
# Exit status: 0 restored; 1 usage or refused (damaged backup, non-empty target).
set -eu
usage() { echo "usage: $0 [-c CONFIG] [-d DATA_DIR] [-f] BACKUP_DIR" >&2; exit 1; }
config="${MAILRAVEN_CONFIG:-}"
datadir=""
force=""
while getopts "c:d:fh" opt; do
    case "$opt" in
        c) config="$OPTARG" ;;
        d) datadir="$OPTARG" ;;
        f) force="--force" ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 1 ] || usage
mailraven=${MAILRAVEN:-mailraven}
exec "$mailraven" ${config:+--config "$config"} restore --from "$1" \
    ${datadir:+--data-dir "$datadir"} $force
