#!/usr/bin/env bash
# Runs every example as a user would (`npx tsx examples/X.ts`), and the example
# test files with their own vitest config, so that none of them rots.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for example in examples/*.ts; do
  case "$example" in
    *.test.ts|*/vitest.config.ts) continue ;;
  esac
  echo "::: example $example"
  if ! timeout 300 npx tsx "$example" >".cache/example-$(basename "$example" .ts).log" 2>&1; then
    echo "example $example failed:"; tail -n 30 ".cache/example-$(basename "$example" .ts).log"; status=1
  fi
done
echo "::: example tests"
npx vitest run --root examples || status=1
exit $status
