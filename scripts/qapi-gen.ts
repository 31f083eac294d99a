/**
 * `npm run qapi:gen`: regenerates `src/generated/` from every QEMU version we
 * support (7.2, 10.0, 11.1: Debian bookworm, trixie, sid), each asked for its
 * `query-qmp-schema` through `npm run -s qemu:path -- VERSION` (installed on
 * first use into the git-ignored cache; the host is not changed).
 *
 *   --out DIR          where to write (default src/generated)
 *   --snapshots        read each version's introspection and names from the
 *                      saved snapshots instead of running QEMU
 *   --introspect BIN   only save the introspection of that QEMU, as
 *                      qmp-schema-X.Y.json in --out (to compare with ours)
 *   --qga-schema FILE  the guest agent's QAPI schema (.json, .json.gz, or our snapshot);
 *                      default: Debian's qemu-guest-agent package via apt-get download,
 *                      else the saved snapshot
 *
 * Writes qmp.ts (the types merged across the versions), qmp-X.Y.ts (each
 * version's own schema as runtime tables), qmp-schema-X.Y.json (the
 * introspection used), qmp-names-X.Y.json (type and member names from that
 * version's QMP reference man page, no prose), qga.ts and qga-schema.json (the
 * agent's schema without its comments). Output is deterministic.
 */
import * as cp from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as zlib from "node:zlib"
import { isSchemaInfoList } from "../src/internal/qapi/schemaInfo.js"
import { emit, emitVersionTables } from "./qapi/emit.js"
import type { Introspection } from "./qapi/introspect.js"
import { fetchIntrospection } from "./qapi/introspect.js"
import type { DocFacts } from "./qapi/manpage.js"
import { DEFAULT_MAN_PAGE, readManPage } from "./qapi/manpage.js"
import { merge } from "./qapi/merge.js"
import { recoverNames } from "./qapi/names.js"
import { formatQapiSource, parseQapiSource, toSchemaInfo } from "./qapi/qgaSource.js"

const ROOT = path.join(path.dirname(new URL(import.meta.url).pathname), "..")
const DEFAULT_OUT = path.join(ROOT, "src", "generated")
/** Commands whose arguments accept members beyond those declared (QEMU hands them to the device). */
const OPEN_ARGS: ReadonlySet<string> = new Set(["device_add"])
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

/** The QEMU versions the types are generated from, oldest first (Debian bookworm, trixie, sid). */
const VERSIONS = ["7.2", "10.0", "11.1"] as const
const docUrl = (version: string, page: string) => `https://qemu.readthedocs.io/en/v${version}.0/interop/${page}.html`

/** `10.0` from `{ major: 10, minor: 0 }`. */
const shortVersion = (intro: Introspection): string => `${intro.version.qemu.major}.${intro.version.qemu.minor}`
const fullVersion = (intro: Introspection): string => {
  const v = intro.version.qemu
  return `${v.major}.${v.minor}.${v.micro}`
}

/** `npm run -s qemu:path -- VERSION`: the folder of that version's launchers (installed on first use). */
const qemuFolder = (version: string): string =>
  cp.execFileSync("bash", [path.join(ROOT, "scripts", "qemu-path.sh"), version], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] })
    .trim()

/** That version's QMP reference man page (7.2: the host's; others: in their private root). */
const manPageOf = (version: string, folder: string): string =>
  version === "7.2" ? DEFAULT_MAN_PAGE : path.join(folder, "..", "root", "usr", "share", "man", "man7", "qemu-qmp-ref.7.gz")

/** Real type names from a man page (only the words of "Returns" that are type names: no prose), else the saved ones. */
const docFacts = (manFile: string | undefined, saved: string): DocFacts => {
  let facts = manFile === undefined ? undefined : readManPage(manFile)
  if (facts) {
    const typeNames = new Set(facts.entries.filter((e) => e.kind !== "Command" && e.kind !== "Event").map((e) => e.name))
    return {
      source: facts.source,
      entries: facts.entries.map((e) => ({ ...e, returnWords: [...new Set(e.returnWords.filter((w) => typeNames.has(w)))] }))
    }
  }
  if (fs.existsSync(saved)) {
    if (manFile !== undefined) console.error(`qapi-gen: ${manFile} not found, using the names saved in ${saved}`)
    return JSON.parse(fs.readFileSync(saved, "utf8")) as DocFacts
  }
  console.error(`qapi-gen: no QMP reference and no saved names for ${saved}: type names are derived only`)
  return { source: "none", entries: [] }
}

interface VersionSource {
  readonly intro: Introspection
  readonly facts: DocFacts
}

/** One version's introspection and names: from its QEMU (installed on first use), or from the saved snapshot. */
const versionSource = async (version: string, fromSnapshots: boolean): Promise<VersionSource> => {
  const snapshot = path.join(DEFAULT_OUT, `qmp-schema-${version}.json`)
  const savedNames = path.join(DEFAULT_OUT, `qmp-names-${version}.json`)
  if (fromSnapshots) return { intro: readSnapshot(snapshot), facts: docFacts(undefined, savedNames) }
  const folder = qemuFolder(version)
  const intro = await fetchIntrospection(path.join(folder, "qemu-system-x86_64"))
  if (shortVersion(intro) !== version) throw new Error(`the QEMU of ${folder} is ${fullVersion(intro)}, not ${version}`)
  return { intro, facts: docFacts(manPageOf(version, folder), savedNames) }
}

const main = async () => {
  const t0 = performance.now()
  const out = path.resolve(option("--out") ?? DEFAULT_OUT)
  fs.mkdirSync(out, { recursive: true })

  // --introspect BINARY: only save that QEMU's introspection as qmp-schema-X.Y.json (to compare with ours)
  const only = option("--introspect")
  if (only !== undefined) {
    const intro = await fetchIntrospection(only)
    fs.writeFileSync(path.join(out, `qmp-schema-${shortVersion(intro)}.json`), formatSnapshot(intro))
    console.log(`qapi-gen: saved the introspection of QEMU ${fullVersion(intro)} (${intro.version.package})`)
    return
  }
  const fromSnapshots = args.includes("--snapshots")
  const sources: Array<VersionSource> = []
  for (const version of VERSIONS) sources.push(await versionSource(version, fromSnapshots))
  const t1 = performance.now()

  const inputs = sources.map(({ facts, intro }) => ({
    version: fullVersion(intro),
    entries: intro.schema,
    realNames: recoverNames(intro.schema, facts)
  }))
  const merged = merge(inputs)
  const newest = sources[sources.length - 1]!.intro
  const version = fullVersion(newest)
  const QMP_DOC = docUrl(VERSIONS[VERSIONS.length - 1], "qemu-qmp-ref")
  const qmp = emit({
    kind: "qmp",
    entries: merged.entries,
    realNames: merged.realNames,
    availability: merged.availability,
    openArgs: OPEN_ARGS,
    header: [
      `Typed QMP commands and events of QEMU ${inputs.map((i) => i.version).join(", ")}, merged: true for every one of`,
      `them (a member some versions lack or do not require is optional; enums are the union;`,
      `commands and events of some versions only are included, and say so). From each`,
      `version's \`query-qmp-schema\` introspection (snapshots: qmp-schema-VERSION.json).`,
      `Type names come from QEMU's QMP reference where they could be matched`,
      `(${QMP_DOC}); the others are derived from the commands and events using them.`
    ],
    version,
    docUrl: QMP_DOC,
    extra: [
      `/** Each version's own schema (its runtime tables), loaded on first use, by "major.minor". */`,
      `export const versionTables: { readonly [majorMinor: string]: () => Promise<VersionTables> } = {`,
      ...VERSIONS.map((v) => `  ${JSON.stringify(v)}: () => import("./qmp-${v}.js"),`),
      `}`
    ]
  })
  const own = sources.map(({ intro }, i) => {
    const e = emit({
      kind: "qmp",
      entries: intro.schema,
      realNames: inputs[i]!.realNames,
      openArgs: OPEN_ARGS,
      header: [],
      version: inputs[i]!.version,
      docUrl: docUrl(VERSIONS[i]!, "qemu-qmp-ref")
    })
    return emitVersionTables(inputs[i]!.version, intro.version.package, e.tables)
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
  // the host's guest agent package: Debian 12's, the oldest version
  const qgaVersion = inputs[0]!.version
  const qgaExprs = parseQapiSource(qgaText)
  const converted = toSchemaInfo(qgaExprs, QGA_LINUX)
  const qga = emit({
    kind: "qga",
    entries: converted.entries,
    realNames: converted.realNames,
    openArgs: new Set(),
    noSuccessResponse: converted.noSuccessResponse,
    header: [
      `Typed commands of the QEMU guest agent ${qgaVersion} (Linux build),`,
      `from the QAPI schema of Debian's qemu-guest-agent package (snapshot: qga-schema.json).`,
      `Reference: ${QGA_DOC}`
    ],
    version: qgaVersion,
    docUrl: QGA_DOC
  })
  const t3 = performance.now()

  fs.writeFileSync(path.join(out, "qmp.ts"), qmp.code)
  VERSIONS.forEach((v, i) => {
    fs.writeFileSync(path.join(out, `qmp-${v}.ts`), own[i]!)
    fs.writeFileSync(path.join(out, `qmp-schema-${v}.json`), formatSnapshot(sources[i]!.intro))
    fs.writeFileSync(path.join(out, `qmp-names-${v}.json`), formatFacts(sources[i]!.facts))
  })
  fs.writeFileSync(path.join(out, "qga.ts"), qga.code)
  fs.writeFileSync(path.join(out, "qga-schema.json"), formatQapiSource(qgaExprs))
  const t4 = performance.now()
  const s = qmp.stats
  console.log(
    `qapi-gen: QMP ${inputs.map((i) => i.version).join(" + ")}: ${s.commands} commands, ${s.events} events, ${s.schemaTypes} named types in the schema -> ` +
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
