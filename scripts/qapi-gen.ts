/**
 * `npm run qapi:gen`: regenerates `src/generated/` from the installed QEMU.
 *
 *   --out DIR          where to write (default src/generated)
 *   --snapshot FILE    read the introspection from a saved snapshot instead of QEMU
 *   --qemu BINARY      QEMU to ask (default $QEMU_BINARY or qemu-system-x86_64)
 *   --man FILE         QMP reference man page for real type names
 *                      (default /usr/share/man/man7/qemu-qmp-ref.7.gz, else the saved names)
 *   --qga-schema FILE  the guest agent's QAPI schema (.json, .json.gz, or our snapshot);
 *                      default: Debian's qemu-guest-agent package via apt-get download,
 *                      else the saved snapshot
 *
 * Writes qmp.ts, qmp-schema.json (the introspection used), qmp-names.json (type
 * and member names from the man page, no prose), qga.ts and qga-schema.json
 * (the agent's schema without its comments). Output is deterministic.
 */
import * as cp from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as zlib from "node:zlib"
import { isSchemaInfoList } from "../src/internal/qapi/schemaInfo.js"
import { emit } from "./qapi/emit.js"
import type { Introspection } from "./qapi/introspect.js"
import { fetchIntrospection } from "./qapi/introspect.js"
import type { DocFacts } from "./qapi/manpage.js"
import { DEFAULT_MAN_PAGE, readManPage } from "./qapi/manpage.js"
import { recoverNames } from "./qapi/names.js"
import { formatQapiSource, parseQapiSource, toSchemaInfo } from "./qapi/qgaSource.js"

const DEFAULT_OUT = path.join(path.dirname(new URL(import.meta.url).pathname), "..", "src", "generated")
const QMP_DOC = "https://qemu.readthedocs.io/en/v7.2.0/interop/qemu-qmp-ref.html"
const QGA_DOC = "https://qemu.readthedocs.io/en/v7.2.0/interop/qemu-ga-ref.html"
/** Symbols a Linux build of the guest agent is configured with. */
const QGA_LINUX = new Set(["CONFIG_POSIX", "CONFIG_LINUX"])

const args = process.argv.slice(2)
const option = (name: string): string | undefined => {
  const i = args.indexOf(name)
  return i >= 0 ? args[i + 1] : undefined
}

const formatSnapshot = (intro: Introspection): string =>
  `{\n"version": ${JSON.stringify(intro.version)},\n"schema": [\n${intro.schema.map((e) => JSON.stringify(e)).join(",\n")}\n]\n}\n`

const readSnapshot = (file: string): Introspection => {
  const parsed = JSON.parse(fs.readFileSync(file, "utf8")) as { version?: Introspection["version"]; schema?: unknown }
  if (!parsed.version || !isSchemaInfoList(parsed.schema)) throw new Error(`${file} is not an introspection snapshot`)
  return { version: parsed.version, schema: parsed.schema }
}

const formatFacts = (facts: DocFacts): string =>
  `{\n"source": ${JSON.stringify(facts.source)},\n"entries": [\n${facts.entries.map((e) => JSON.stringify(e)).join(",\n")}\n]\n}\n`

const readText = (file: string): string => {
  const buf = fs.readFileSync(file)
  return file.endsWith(".gz") ? zlib.gunzipSync(buf).toString("utf8") : buf.toString("utf8")
}

/** Debian's qemu-guest-agent package, unpacked in a temp dir: its schema's text. */
const aptGuestAgentSchema = (): string | undefined => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "qapi-gen-"))
  try {
    cp.execFileSync("apt-get", ["download", "-o", "APT::Sandbox::User=root", "qemu-guest-agent"], { cwd: dir, stdio: "pipe" })
    const deb = fs.readdirSync(dir).find((f) => f.endsWith(".deb"))
    if (!deb) return undefined
    cp.execFileSync("dpkg-deb", ["-x", deb, "x"], { cwd: dir, stdio: "pipe" })
    const file = path.join(dir, "x/usr/share/doc/qemu-guest-agent/qapi-schema.json.gz")
    return fs.existsSync(file) ? readText(file) : undefined
  } catch {
    return undefined
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

const main = async () => {
  const t0 = performance.now()
  const out = path.resolve(option("--out") ?? DEFAULT_OUT)
  fs.mkdirSync(out, { recursive: true })
  const snapshot = option("--snapshot")
  const binary = option("--qemu") ?? process.env.QEMU_BINARY ?? "qemu-system-x86_64"
  const intro = snapshot ? readSnapshot(snapshot) : await fetchIntrospection(binary)
  const t1 = performance.now()

  // real type names: the installed man page, else the names saved last time
  const savedNames = path.join(DEFAULT_OUT, "qmp-names.json")
  const manFile = option("--man") ?? DEFAULT_MAN_PAGE
  let facts = readManPage(manFile)
  if (facts) {
    // keep only words of "Returns" that are type names: no prose in the snapshot
    const typeNames = new Set(facts.entries.filter((e) => e.kind !== "Command" && e.kind !== "Event").map((e) => e.name))
    facts = {
      source: facts.source,
      entries: facts.entries.map((e) => ({ ...e, returnWords: [...new Set(e.returnWords.filter((w) => typeNames.has(w)))] }))
    }
  } else if (fs.existsSync(savedNames)) {
    facts = JSON.parse(fs.readFileSync(savedNames, "utf8")) as DocFacts
    console.error(`qapi-gen: ${manFile} not found, using the names saved in ${savedNames}`)
  } else {
    facts = { source: "none", entries: [] }
    console.error(`qapi-gen: ${manFile} not found and no saved names: type names are derived only`)
  }
  const realNames = recoverNames(intro.schema, facts)
  const v = intro.version.qemu
  const version = `${v.major}.${v.minor}.${v.micro}`
  const qmp = emit({
    kind: "qmp",
    entries: intro.schema,
    realNames,
    openArgs: new Set(["device_add"]),
    header: [
      `Typed QMP commands and events of QEMU ${version} (${intro.version.package}),`,
      `from its \`query-qmp-schema\` introspection (snapshot: qmp-schema.json).`,
      `Type names come from QEMU's QMP reference where they could be matched`,
      `(${QMP_DOC}); the others are derived from the commands and events using them.`
    ],
    version,
    docUrl: QMP_DOC
  })
  const t2 = performance.now()

  // the guest agent
  const qgaOption = option("--qga-schema")
  const savedQga = path.join(DEFAULT_OUT, "qga-schema.json")
  let qgaText = qgaOption ? readText(qgaOption) : aptGuestAgentSchema()
  if (qgaText === undefined) {
    console.error(`qapi-gen: could not download qemu-guest-agent, using ${savedQga}`)
    qgaText = readText(savedQga)
  }
  const qgaExprs = parseQapiSource(qgaText)
  const converted = toSchemaInfo(qgaExprs, QGA_LINUX)
  const qga = emit({
    kind: "qga",
    entries: converted.entries,
    realNames: converted.realNames,
    openArgs: new Set(),
    noSuccessResponse: converted.noSuccessResponse,
    header: [
      `Typed commands of the QEMU guest agent ${version} (Linux build),`,
      `from the QAPI schema of Debian's qemu-guest-agent package (snapshot: qga-schema.json).`,
      `Reference: ${QGA_DOC}`
    ],
    version,
    docUrl: QGA_DOC
  })
  const t3 = performance.now()

  fs.writeFileSync(path.join(out, "qmp.ts"), qmp.code)
  fs.writeFileSync(path.join(out, "qmp-schema.json"), formatSnapshot(intro))
  fs.writeFileSync(path.join(out, "qmp-names.json"), formatFacts(facts))
  fs.writeFileSync(path.join(out, "qga.ts"), qga.code)
  fs.writeFileSync(path.join(out, "qga-schema.json"), formatQapiSource(qgaExprs))
  const t4 = performance.now()
  const s = qmp.stats
  console.log(
    `qapi-gen: QMP ${version}: ${s.commands} commands, ${s.events} events, ${s.schemaTypes} named types in the schema -> ` +
      `${s.emittedTypes} emitted after de-duplication (${s.realNamed} with their QAPI name), ${qmp.code.length} bytes`
  )
  console.log(
    `qapi-gen: guest agent: ${qga.stats.commands} commands, ${qga.stats.schemaTypes} types -> ${qga.stats.emittedTypes} emitted, ${qga.code.length} bytes`
  )
  console.log(
    `qapi-gen: ${(t4 - t0).toFixed(0)} ms (introspection ${(t1 - t0).toFixed(0)}, QMP ${(t2 - t1).toFixed(0)}, agent ${
      (t3 - t2).toFixed(0)
    }, write ${(t4 - t3).toFixed(0)}) -> ${out}`
  )
}

main().catch((err: unknown) => {
  console.error(`qapi-gen: ${err instanceof Error ? err.message : String(err)}`)
  process.exit(1)
})
