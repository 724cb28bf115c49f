# Shared by the wrk-based benchmarks: source it after setting $load_pin and $seconds.

# json PATH: reads JSON on stdin and prints the value at PATH (a Python subscript, e.g. '["token"]').
json() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval("d"+sys.argv[1]))' "$1"; }

# measure NAME URL CONNECTIONS [wrk args...]: prints "p50_ms p99_ms requests_per_second" of a
# wrk run of $seconds seconds after a one-second warm-up, refusing a run with failed responses.
measure() {
  local name=$1 url=$2 connections=$3; shift 3
  $load_pin wrk -t1 -c"$connections" -d1s "$@" "$url" >/dev/null 2>&1 || true   # warm up
  local out; out=$($load_pin wrk -t1 -c"$connections" -d"${seconds}s" --latency "$@" "$url")
  if grep -q "Non-2xx" <<<"$out"; then echo "$name: some responses failed:" >&2; echo "$out" >&2; exit 1; fi
  python3 - "$out" <<'PY'
import re, sys
out = sys.argv[1]
def ms(text):
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
p50 = ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
print(f"{p50:.2f} {p99:.2f} {rps:.0f}")
PY
}
