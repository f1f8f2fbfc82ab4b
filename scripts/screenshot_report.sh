#!/usr/bin/env bash
# Open a dupes HTML report in headless Chromium and save a screenshot of it.
#
#   scripts/screenshot_report.sh RUN/report.html [OUT.png] [WIDTHxHEIGHT]
#
# Needs Debian's chromium (`apt-get install chromium`). The flags keep Chromium off the
# network (the report is self-contained) and let it run as root in a container.
set -euo pipefail
report=${1:?usage: $0 REPORT.html [OUT.png] [WIDTHxHEIGHT]}
out=${2:-${report%.html}.png}
size=${3:-1400x2400}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
  echo "error: no chromium found; install it with: apt-get install chromium" >&2
  exit 2
fi
[ -f "$report" ] || { echo "error: $report does not exist; write it with: dupes report RUN --html" >&2; exit 2; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size="${size/x/,}" \
  --screenshot="$(realpath -m "$out")" "file://$(realpath "$report")" 2>"$profile/stderr" || {
    cat "$profile/stderr" >&2; exit 1; }
[ -s "$out" ] || { echo "error: chromium wrote no screenshot" >&2; cat "$profile/stderr" >&2; exit 1; }
echo "$out"
