// Writes every ```ts block of README.md and every `@example` ```ts block of the public
// modules (src/*.ts, src/testing, src/fleet) into OUTDIR, one file each, named after
// where it came from (readme-L48.ts, example-QemuMachine-L10.ts), so that
// scripts/check-package.sh type-checks them against the packed package as a user's
// program. Blocks that are not meant to compile use another fence (```text, ```sh).
// Usage: node scripts/consumer/doc-blocks.mjs REPO OUTDIR
import * as fs from "node:fs"
import * as path from "node:path"

const [root, out] = process.argv.slice(2)
if (!root || !out) throw new Error("usage: doc-blocks.mjs REPO OUTDIR")
fs.mkdirSync(out, { recursive: true })
const written = []
const emit = (name, lines) => {
  const file = path.join(out, `${name}.ts`)
  fs.writeFileSync(file, lines.join("\n") + "\n")
  written.push(path.basename(file))
}

// README: a block runs from a line "```ts" to the next "```". A block opened with "```ts run"
// needs nothing but QEMU and finishes by itself: its file is named *-run.ts, and
// check-package.sh runs it too.
const readme = fs.readFileSync(path.join(root, "README.md"), "utf8").split("\n")
for (let i = 0; i < readme.length; i++) {
  const fence = readme[i].trim()
  if (fence !== "```ts" && fence !== "```ts run") continue
  const start = i + 1
  const body = []
  for (i++; i < readme.length && readme[i].trim() !== "```"; i++) body.push(readme[i])
  emit(`readme-L${start}${fence.endsWith(" run") ? "-run" : ""}`, body)
}

// TSDoc: "@example" then a ```ts block inside a /** */ comment, each line prefixed by " * ".
const modules = [
  ...fs.readdirSync(path.join(root, "src")).filter((f) => f.endsWith(".ts")).map((f) => path.join("src", f)),
  ...["testing", "fleet"].flatMap((d) =>
    fs.readdirSync(path.join(root, "src", d)).filter((f) => f.endsWith(".ts")).map((f) => path.join("src", d, f)))
]
for (const rel of modules) {
  const lines = fs.readFileSync(path.join(root, rel), "utf8").split("\n")
  const strip = (l) => l.replace(/^\s*\* ?/, "")
  for (let i = 0; i < lines.length; i++) {
    if (!/^\s*\*\s*@example\s*$/.test(lines[i])) continue
    let j = i + 1
    while (j < lines.length && strip(lines[j]).trim() === "") j++
    if (strip(lines[j] ?? "").trim() !== "```ts") {
      console.error(`${rel}:${i + 1}: @example without a \`\`\`ts block`)
      process.exitCode = 1
      continue
    }
    const body = []
    for (j++; j < lines.length && strip(lines[j]).trim() !== "```"; j++) body.push(strip(lines[j]))
    emit(`example-${rel.replace(/^src\//, "").replace(/\.ts$/, "").replace(/\//g, "-")}-L${i + 1}`, body)
  }
}
console.log(written.join("\n"))
