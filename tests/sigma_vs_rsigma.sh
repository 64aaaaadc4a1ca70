#!/usr/bin/env bash
# Independent check of cloudwarden's Sigma matching: the rsigma CLI (crates.io, same rsigma-eval
# version) and `cloudwarden replay` with `[sigma] rules` run the SigmaHQ cloud rules over every
# event of ../shared/data/public; the (rule id, event id) match sets must be equal.
#
# Routing is done here as cloudwarden does it: CloudTrail events × rules/aws, Entra ID audit rows ×
# rules/azure/audit_logs, O365 rows × rules/m365 (with tests/sigma_vs_rsigma/m365.yml, the same
# field mapping as an rsigma pipeline). Prints the figures; exits 1 on a difference.
# `--break` drops one rule from cloudwarden's side, to show the check can fail.
# Not part of `make test` (it builds a crate).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DATA=${DATA:-$ROOT/../shared/data/public}
[ -d "$DATA" ] || DATA=/work/shared/data/public
RULES=$ROOT/tests/fixtures/sigma/rules
RSIGMA=$ROOT/.tools/rsigma/bin/rsigma
if [ ! -x "$RSIGMA" ]; then
  cargo install rsigma --version 0.23.0 --locked --root "$ROOT/.tools/rsigma"
fi
cargo build --quiet --bin cloudwarden
CW=$ROOT/target/debug/cloudwarden
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# Every NDJSON file of the public data (the CSV is not a shape cloudwarden decodes).
find "$DATA" -name '*.ndjson' ! -name '*.sources.ndjson' | sort > "$WORK/files"

# One event per line, split by route, each with the event id cloudwarden gives it.
python3 - "$WORK" "$CW" <<'PY'
import json, subprocess, sys
work, cw = sys.argv[1], sys.argv[2]
out = {r: open(f"{work}/{r}.ndjson", "w") for r in ("aws", "entra", "o365")}
ids = {}
for path in open(f"{work}/files").read().split():
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        rec = json.loads(line)
        items = rec.get("Records") if isinstance(rec, dict) and "Records" in rec else [rec]
        for item in items:
            text = json.dumps(item)
            norm = subprocess.run([cw, "normalize"], input=text.encode(), capture_output=True).stdout
            try:
                ev = json.loads(norm.decode().splitlines()[0])
            except Exception:
                continue
            if "cloud_provider" not in ev:
                continue
            route = {"aws": "aws", "entra_id": "entra", "o365": "o365"}.get(ev["cloud_provider"])
            if route is None:
                continue
            uid = ev.get("metadata_uid")
            out[route].write(text + "\n")
            ids[json.dumps(item, sort_keys=True)] = uid
for f in out.values():
    f.close()
json.dump(ids, open(f"{work}/ids.json", "w"))
PY

# rsigma: matches per route.
run_rsigma() { # route rules [pipeline]
  local extra=()
  [ -n "${3:-}" ] && extra=(-p "$3")
  "$RSIGMA" engine eval -r "$2" -e "@$WORK/$1.ndjson" --include-event "${extra[@]}" 2>/dev/null || true
}
{
  run_rsigma aws "$RULES/aws"
  run_rsigma entra "$RULES/azure/audit_logs"
  run_rsigma o365 "$RULES/m365" "$ROOT/tests/sigma_vs_rsigma/m365.yml"
} > "$WORK/rsigma.ndjson"

# cloudwarden: replay the same events with every rule loaded, no suppression in the way.
cat > "$WORK/cw.toml" <<TOML
[alerts.suppression]
burst = 1000000
[sigma]
rules = ["$RULES"]
TOML
cat "$WORK/aws.ndjson" "$WORK/entra.ndjson" "$WORK/o365.ndjson" > "$WORK/all.ndjson"
"$CW" replay -c "$WORK/cw.toml" --no-progress "$WORK/all.ndjson" > "$WORK/cw.ndjson" 2>/dev/null

python3 - "$WORK" "${1:-}" <<'PY'
import json, sys
work, mode = sys.argv[1], sys.argv[2]
ids = json.load(open(f"{work}/ids.json"))
rs = set()
for line in open(f"{work}/rsigma.ndjson"):
    line = line.strip()
    if not line.startswith("{"):
        continue
    m = json.loads(line)
    rid = m.get("rule_id") or m.get("header", {}).get("rule_id")
    ev = m.get("event") or m.get("body", {}).get("event")
    if rid is None or ev is None:
        continue
    rs.add((rid, ids.get(json.dumps(ev, sort_keys=True))))
cw = set()
for line in open(f"{work}/cw.ndjson"):
    a = json.loads(line)
    if a.get("detector") != "sigma":
        continue
    cw.add((a["sigma"]["id"], a["evidence"]["event_uids"][0]))
if mode == "--break" and cw:
    drop = sorted(cw)[0][0]
    cw = {m for m in cw if m[0] != drop}
    print(f"--break: dropped rule {drop} from cloudwarden's matches")
events = sum(1 for r in ("aws", "entra", "o365") for _ in open(f"{work}/{r}.ndjson"))
print(f"events: {events}")
print(f"rsigma matches: {len(rs)} ({len({r for r, _ in rs})} rules)")
print(f"cloudwarden matches: {len(cw)} ({len({r for r, _ in cw})} rules)")
only_rs, only_cw = sorted(rs - cw), sorted(cw - rs)
print(f"only rsigma: {len(only_rs)}; only cloudwarden: {len(only_cw)}")
for m in only_rs[:20]:
    print("  only rsigma", m)
for m in only_cw[:20]:
    print("  only cloudwarden", m)
sys.exit(1 if only_rs or only_cw else 0)
PY
