#!/usr/bin/env bash
# Proves that the `gpu` extra resolves together with our pins, without installing anything:
#
#   pip install --dry-run -c constraints.txt '.[gpu]'
#
# run from the repository root, in a scratch venv under a temp dir (removed on exit), and
# prints the resolved vllm, torch, transformers and trl (then triton, flashinfer-python,
# torchvision, xformers when present), one `name version` per line. Exits non-zero when pip
# cannot resolve, or when one of the four is missing from the resolution.
#
# Metadata only: pip reads each wheel's METADATA (PEP 658 files where the index serves them,
# otherwise HTTP range reads of the wheel: --use-feature=fast-deps) instead of downloading
# the wheels. Measured on the dev machine (Python 3.11/3.12, 2 cores): 87-126 s and ~100 MB
# received, 252 distributions (without fast-deps, where the index serves no PEP 658 metadata,
# pip downloads ~1.6 GB of wheels, vllm's alone being 315 MB).
#
# The machine's pip configuration (config files, PIP_FIND_LINKS, PIP_EXTRA_INDEX_URL,
# PIP_CONSTRAINT) is ignored by default, so torch is resolved as a GPU user gets it from the
# index (the CUDA build of torch 2.13.0 with its nvidia-* and triton pins), not the local CPU
# wheel. GPU_EXTRA_USE_PIP_CONFIG=1 keeps the machine's configuration instead.
#
# Environment: PYTHON (interpreter for the scratch venv, default python3),
# GPU_EXTRA_TIMEOUT (seconds for the resolution, default 300), KEEP_REPORT=path (copy
# pip's --report JSON there).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

PY=${PYTHON:-python3}
limit=${GPU_EXTRA_TIMEOUT:-300}
start=$(date +%s)
rx() { awk '/:/ && $1 !~ /^lo:/ {sub(/^[^:]*:/, ""); split($0, f, " "); s += f[1]} END {printf "%.0f\n", s}' /proc/net/dev 2>/dev/null || echo 0; }
rx0=$(rx)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gpu-extra.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

if [ "${GPU_EXTRA_USE_PIP_CONFIG:-0}" != 1 ]; then
  export PIP_CONFIG_FILE=/dev/null
  unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_CONSTRAINT PIP_NO_INDEX || true
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1

"$PY" -m venv "$tmp/venv"
vpy="$tmp/venv/bin/python"
# An old pip (e.g. 23.x) would download every wheel whole to read its metadata.
"$vpy" -m pip install -q --cache-dir "$tmp/cache" -U 'pip>=25.1' >"$tmp/pip-upgrade.log" 2>&1 || {
  cat "$tmp/pip-upgrade.log" >&2; echo "gpu-extra: could not upgrade pip in the scratch venv" >&2; exit 1; }

feature=()
if "$vpy" -m pip install --use-feature=fast-deps --help >/dev/null 2>&1; then
  feature=(--use-feature=fast-deps)
fi

report="$tmp/report.json"
rc=0
timeout "$limit" "$vpy" -m pip install --dry-run --ignore-installed --prefer-binary \
  ${feature[@]+"${feature[@]}"} --cache-dir "$tmp/cache" --report "$report" \
  -c constraints.txt "$root[gpu]" >"$tmp/pip.log" 2>&1 || rc=$?
if [ "$rc" != 0 ]; then
  grep -v "is ignored: it is neither a file nor a directory" "$tmp/pip.log" | tail -40 >&2
  [ "$rc" = 124 ] && echo "gpu-extra: resolution did not finish in ${limit}s" >&2
  echo "gpu-extra: '.[gpu]' with constraints.txt does NOT resolve (pip exit $rc)" >&2
  exit 1
fi

"$vpy" - "$report" <<'EOF'
import json, re, sys
r = json.load(open(sys.argv[1]))
got = {re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(): i["metadata"]["version"] for i in r["install"]}
need = ["vllm", "torch", "transformers", "trl"]
for name in need + ["triton", "flashinfer-python", "torchvision", "xformers"]:
    if name in got:
        print(name, got[name])
missing = [n for n in need if n not in got]
if missing:
    sys.exit(f"gpu-extra: not in the resolution: {', '.join(missing)}")
print(f"gpu-extra: {len(got)} distributions resolve (Python {r['environment']['python_full_version']}, "
      f"{r['environment']['platform_machine']}, pip {r['pip_version']})", file=sys.stderr)
EOF
if [ -n "${KEEP_REPORT:-}" ]; then cp "$report" "$KEEP_REPORT"; fi
echo "gpu-extra: resolved in $(( $(date +%s) - start )) s, ~$(( ($(rx) - rx0) / 1000000 )) MB received by this machine (rough)" >&2
