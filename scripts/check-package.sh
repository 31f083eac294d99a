#!/usr/bin/env bash
# Installs the package as a user does: `npm pack`, then the tarball into an
# empty project; type-checks a consumer file against the shipped .d.ts and runs
# it (launch + query-status + shutdown). Fails on any step.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d /tmp/effect-qemu-consumer-XXXXXX)
trap 'rm -rf "$work"' EXIT
# prepack builds dist/: a clean clone has none, and the tarball must not ship without code.
npm pack --silent --pack-destination "$work" >/dev/null
tarball=$(cd "$work" && ls effect-qemu-*.tgz)
listing=$(tar -tzf "$work/$tarball")
grep -qx 'package/dist/index.js' <<<"$listing" || { echo "the tarball has no dist/index.js"; exit 1; }
# stripInternal: helpers marked @internal are not part of the shipped types.
tar -xzf "$work/$tarball" -C "$work" package/dist/Errors.d.ts
if grep -q describeCause "$work/package/dist/Errors.d.ts"; then echo "dist/Errors.d.ts ships an @internal helper"; exit 1; fi
cd "$work"
npm init -y >/dev/null
# Our install script builds the native helpers with node-gyp: npm 11 runs it only when the user allows it.
node -e 'const p=require("./package.json");p.type="module";p.allowScripts={"effect-qemu":true};require("fs").writeFileSync("package.json",JSON.stringify(p,null,2))'
effect_version=$(node -p 'require(process.argv[1]).dependencies.effect' "$root/package.json")
npm install --no-audit --no-fund "./$tarball" "effect@$effect_version" typescript@~5.9 @types/node@20 >npm.log 2>&1 \
  || { tail -n 30 npm.log; exit 1; }
cp "$root/scripts/consumer/consumer.ts" .
cat > tsconfig.json <<'JSON'
{ "compilerOptions": { "target": "ES2022", "module": "NodeNext", "moduleResolution": "NodeNext", "strict": true,
  "skipLibCheck": true, "types": ["node"], "outDir": "out" }, "files": ["consumer.ts"] }
JSON
npx tsc -p tsconfig.json
out=$(node out/consumer.js)
echo "consumer: $out"
echo "$out" | grep -q '"after":"Exited"' || { echo "unexpected consumer output"; exit 1; }
