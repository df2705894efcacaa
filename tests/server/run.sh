#!/usr/bin/env bash
# Starts g4 serve on a free loopback port, checks it with curl (SSE, malformed input)
# and with the official openai npm client, then stops it.
set -uo pipefail
G4=$1 MODEL=$2 GOLD=$3
HERE=$(cd "$(dirname "$0")" && pwd)
PORT=$((20000 + RANDOM % 20000))
LOG=$(mktemp)
"$G4" serve -m "$MODEL" --port "$PORT" --parallel 4 --precision f64 --debug-load-delay-ms 1500 >"$LOG" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -f "$LOG"' EXIT
fails=0 passes=0
ok() { if [ "$1" = "$2" ]; then passes=$((passes+1)); echo "ok   $3"; else fails=$((fails+1)); echo "FAIL $3 (got '$1', want '$2')"; fi; }
url=http://127.0.0.1:$PORT
export G4_SAW_503=0
for _ in $(seq 1 100); do
  code=$(curl -s -o /dev/null -w '%{http_code}' $url/health)
  [ "$code" = 503 ] && G4_SAW_503=1
  [ "$code" = 200 ] && break
  sleep 0.1
done
ok "$code" 200 "/health is 200 once loaded"
# SSE ends with data: [DONE]
last=$(curl -sN $url/v1/completions -H 'Content-Type: application/json' -d '{"prompt":"The jury","max_tokens":5,"stream":true,"temperature":0}' | grep -v '^$' | tail -1)
ok "$last" "data: [DONE]" "SSE stream ends with data: [DONE]"
code() { curl -s -o /tmp/g4body.$$ -w '%{http_code}' -H 'Content-Type: application/json' "$@"; }
isjson() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert "message" in d["error"]' /tmp/g4body.$$ 2>/dev/null && echo yes || echo no; }
ok "$(code $url/v1/completions -d '{"prompt": "x", ')" 400 "malformed JSON -> 400"; ok "$(isjson)" yes "  with a JSON error"
ok "$(code $url/v1/completions -d '{"prompt": 5}')" 400 "prompt of the wrong type -> 400"; ok "$(isjson)" yes "  with a JSON error"
ok "$(code $url/v1/completions -d '{"prompt": "x", "temperature": "hot"}')" 400 "temperature as a string -> 400"
ok "$(code $url/v1/completions -d '{"prompt": "x", "max_tokens": 100000000}')" 400 "oversized max_tokens -> 400"
ok "$(code $url/v1/completions -d '{"prompt": "x", "max_tokens": -1}')" 400 "negative max_tokens -> 400"
ok "$(code $url/v1/completions -d '{"prompt": "x", "model": "nope"}')" 404 "unknown model -> 404"; ok "$(isjson)" yes "  with a JSON error"
ok "$(code $url/v1/completions -d '[1,2,3]')" 400 "JSON that is not an object -> 400"
ok "$(code $url/v1/chat/completions -d '{"messages": [{"role": "wizard", "content": "x"}]}')" 400 "unknown role -> 400"
ok "$(code $url/v1/chat/completions -d '{"messages": "hi"}')" 400 "messages not an array -> 400"
ok "$(code $url/v1/completions -d "{\"prompt\": \"$(head -c 20000 /dev/zero | tr '\0' 'a')\", \"max_tokens\": 1}")" 400 "prompt longer than the context -> 400"
ok "$(head -c 3000000 /dev/zero | tr '\0' 'a' | curl -s -o /tmp/g4body.$$ -w '%{http_code}' -H 'Content-Type: application/json' $url/v1/completions --data-binary @-)" 413 "3 MB body -> 413"
ok "$(code $url/v1/nothing)" 404 "unknown route -> 404"; ok "$(isjson)" yes "  with a JSON error"
ok "$(code -X POST $url/v1/completions -d '{"prompt": "ok", "max_tokens": 2}')" 200 "still serving after the bad requests"
rm -f /tmp/g4body.$$
echo "curl: $passes passed, $fails failed"
if [ ! -d "$HERE/node_modules/openai" ] || [ ! -d "$HERE/node_modules/ai" ]; then
  (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error) || { echo "FAIL npm install of the openai client"; exit 1; }
fi
node "$HERE/openai_client.mjs" "$PORT" "$G4" "$MODEL" "$GOLD"
node_rc=$?
kill -0 $PID 2>/dev/null || { echo "FAIL the server died"; exit 1; }

# Issue 16: tools, thinking, structured output and logprobs on brown-mini-tools (brown-mini
# with Gemma 4's full special-token set), with the openai client and the Vercel AI SDK.
MODEL2=$HERE/../fixtures/brown-mini-tools
PORT2=$((PORT + 1))
LOG2=$(mktemp)
"$G4" serve -m "$MODEL2" --port "$PORT2" --parallel 2 --precision f64 --debug-inject >"$LOG2" 2>&1 &
PID2=$!
trap 'kill $PID $PID2 2>/dev/null; wait $PID $PID2 2>/dev/null; rm -f "$LOG" "$LOG2"' EXIT
for _ in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$PORT2/health)" = 200 ] && break
  sleep 0.1
done
node "$HERE/tools_client.mjs" "$PORT2" "$G4" "$MODEL2"
tools_rc=$?
kill -0 $PID2 2>/dev/null || { echo "FAIL the tools server died"; tools_rc=1; }
if grep -q "malformed tool call" "$LOG2"; then echo "ok   the malformed call is a warning in the log"; else echo "FAIL no warning logged for the malformed call"; tools_rc=1; fi
[ $fails -eq 0 ] && [ $node_rc -eq 0 ] && [ $tools_rc -eq 0 ]
