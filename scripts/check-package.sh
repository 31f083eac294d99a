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
# effect and @effect/platform(-node) are peer dependencies: the project brings its own Effect 3
# (npm installs the peers itself when missing; we ask for the range we declare).
peer() { node -p 'require(process.argv[1]).peerDependencies[process.argv[2]]' "$root/package.json" "$1"; }
npm install --no-audit --no-fund "./$tarball" "effect@$(peer effect)" "@effect/platform@$(peer @effect/platform)" \
  "@effect/platform-node@$(peer @effect/platform-node)" typescript@~5.9 @types/node@20 >npm.log 2>&1 \
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
# An installed package builds its test guest in the user's cache directory, not in node_modules.
guest_dir=$(XDG_CACHE_HOME=/nonexistent-cache node --input-type=module \
  -e 'import { Guest } from "effect-qemu/testing"; console.log(Guest.defaultDir())')
[ "$guest_dir" = /nonexistent-cache/effect-qemu/guest ] || { echo "Guest.defaultDir() is $guest_dir"; exit 1; }

# The docs as a user copies them: every ```ts block of README.md and every @example of the
# public modules, type-checked as written against the installed package (the fleet's optional
# peers installed for its blocks).
echo "::: docs: README blocks and @example blocks against the package"
npm install --no-audit --no-fund "@effect/cluster@$(peer @effect/cluster)" "@effect/rpc@$(peer @effect/rpc)" \
  "@effect/sql@$(peer @effect/sql)" "@effect/workflow@$(peer @effect/workflow)" \
  "@effect/experimental@$(peer @effect/experimental)" >npm-docs.log 2>&1 \
  || { tail -n 30 npm-docs.log; exit 1; }
node "$root/scripts/consumer/doc-blocks.mjs" "$root" docs >/dev/null
cat > docs/tsconfig.json <<'JSON'
{ "compilerOptions": { "target": "ES2022", "lib": ["ES2022"], "module": "NodeNext", "moduleResolution": "NodeNext",
  "strict": true, "skipLibCheck": true, "types": ["node"], "outDir": "out" }, "include": ["*.ts"] }
JSON
npx tsc -p docs/tsconfig.json || { echo "README/@example blocks do not compile against the package (above)"; exit 1; }
echo "docs: $(ls docs/*.ts | wc -l) blocks compile"
# The README's "```ts run" blocks, run against the real QEMU.
for js in docs/out/*-run.js; do
  [ -e "$js" ] || continue
  timeout 120 node "$js" >"$js.log" 2>&1 || { cat "$js.log"; echo "README block $(basename "$js" .js) failed"; exit 1; }
  echo "docs: $(basename "$js" .js) ran"
done

# A project on Effect 4: npm must refuse with a peer conflict (ERESOLVE) naming effect,
# not install a tree that fails at run time.
echo "::: Effect 4 project: expecting npm's peer error"
mkdir effect4 && cd effect4
npm init -y >/dev/null
if npm install --no-audit --no-fund "../$tarball" "effect@^4" >npm.log 2>&1; then
  echo "npm installed effect-qemu beside Effect 4 without a peer error"; exit 1
fi
grep -q 'ERESOLVE' npm.log && grep -q 'peer effect@' npm.log \
  || { tail -n 30 npm.log; echo "expected ERESOLVE naming peer effect"; exit 1; }
echo "effect 4: $(grep -m1 'peer effect@' npm.log | sed 's/^npm error *//')"

# The fleet with one storage driver each, as the README tells users to install it: a one-host
# project has only @effect/sql-sqlite-node, a multi-host one only @effect/sql-pg; each launches
# a VM through the fleet (the second on a throwaway PostgreSQL).
for driver in sqlite pg; do
  echo "::: fleet with only the $driver driver"
  cd "$work" && mkdir "fleet-$driver" && cd "fleet-$driver"
  npm init -y >/dev/null
  node -e 'const p=require("./package.json");p.type="module";p.allowScripts={"effect-qemu":true,"better-sqlite3":true};require("fs").writeFileSync("package.json",JSON.stringify(p,null,2))'
  if [ "$driver" = sqlite ]; then pkg="@effect/sql-sqlite-node@$(peer @effect/sql-sqlite-node)" other=@effect/sql-pg
  else pkg="@effect/sql-pg@$(peer @effect/sql-pg)" other=@effect/sql-sqlite-node; fi
  npm install --no-audit --no-fund "../$tarball" "effect@$(peer effect)" "@effect/platform@$(peer @effect/platform)" \
    "@effect/platform-node@$(peer @effect/platform-node)" "@effect/cluster@$(peer @effect/cluster)" \
    "@effect/rpc@$(peer @effect/rpc)" "@effect/sql@$(peer @effect/sql)" "@effect/workflow@$(peer @effect/workflow)" \
    "@effect/experimental@$(peer @effect/experimental)" "$pkg" >npm.log 2>&1 || { tail -n 30 npm.log; exit 1; }
  [ ! -e "node_modules/$other" ] || { echo "$other was installed too"; exit 1; }
  cp "$root/scripts/consumer/fleet.mjs" .
  if [ "$driver" = sqlite ]; then out=$(node fleet.mjs sqlite)
  else
    pg=$(bash "$root/scripts/postgres.sh" start)
    pgdir=$(sed -n 's/^PGDIR=//p' <<<"$pg")
    out=$(node fleet.mjs pg "$(sed -n 's/^DATABASE_URL=//p' <<<"$pg")") || { bash "$root/scripts/postgres.sh" stop "$pgdir"; exit 1; }
    bash "$root/scripts/postgres.sh" stop "$pgdir" >/dev/null
  fi
  echo "fleet ($driver only): $out"
  grep -q '"status":"running"' <<<"$out" || { echo "unexpected fleet output"; exit 1; }
done

# What the tarball holds: the LICENSE, compiled code without source maps (src/ is not shipped),
# the native sources, and of scripts/ only what the testing module runs.
echo "::: tarball contents"
grep -qx 'package/LICENSE' <<<"$listing" || { echo "the tarball has no LICENSE"; exit 1; }
if grep -E '\.map$|^package/src/' <<<"$listing"; then echo "source maps or src/ in the tarball"; exit 1; fi
for f in binding.gyp native/fdpass.cc native/spawn.cc native/pdeathsig.c native/hwclock.c native/clockd.c native/nolibc.h scripts/build-guest.sh; do
  grep -qx "package/$f" <<<"$listing" || { echo "the tarball has no $f"; exit 1; }
done
extra=$(grep '^package/scripts/' <<<"$listing" | grep -vx -e package/scripts/build-guest.sh -e package/scripts/build-debian-image.sh || true)
[ -z "$extra" ] || { echo "development scripts in the tarball: $extra"; exit 1; }
echo "tarball: $(wc -l <<<"$listing") files, LICENSE, no source maps, no development scripts"
