/**
 * Reads `query-qmp-schema` and `query-version` from the installed QEMU over
 * QMP on stdio (`-machine none`: the schema does not depend on the machine).
 */
import * as cp from "node:child_process"
import type { SchemaInfo } from "../../src/internal/qapi/schemaInfo.js"
import { isSchemaInfoList } from "../../src/internal/qapi/schemaInfo.js"

export interface QemuVersionInfo {
  readonly qemu: { readonly major: number; readonly minor: number; readonly micro: number }
  readonly package: string
}

export interface Introspection {
  readonly version: QemuVersionInfo
  readonly schema: ReadonlyArray<SchemaInfo>
}

export const fetchIntrospection = (binary: string): Promise<Introspection> =>
  new Promise((resolve, reject) => {
    const child = cp.spawn(binary, ["-machine", "none", "-nodefaults", "-display", "none", "-qmp", "stdio"], {
      stdio: ["pipe", "pipe", "pipe"]
    })
    // QEMU must not outlive us, however we end (a test may kill us)
    const killChild = () => child.kill("SIGKILL")
    process.once("exit", killChild)
    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      process.once(signal, () => {
        killChild()
        process.exit(1)
      })
    }
    let buffer = ""
    let stderr = ""
    const replies = new Map<string, unknown>()
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      reject(new Error(`${binary} did not answer within 30 s`))
    }, 30_000)
    const send = (msg: object) => child.stdin.write(`${JSON.stringify(msg)}\n`)
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString("utf8")))
    child.on("error", (err) => {
      clearTimeout(timer)
      reject(err)
    })
    child.on("exit", (code) => {
      clearTimeout(timer)
      const schema = replies.get("schema")
      const version = replies.get("version")
      if (isSchemaInfoList(schema) && typeof version === "object" && version !== null) {
        resolve({ schema, version: version as QemuVersionInfo })
      } else {
        reject(new Error(`${binary} exited (${code}) before answering: ${stderr.trim()}`))
      }
    })
    child.stdout.on("data", (d: Buffer) => {
      buffer += d.toString("utf8")
      for (let nl = buffer.indexOf("\n"); nl >= 0; nl = buffer.indexOf("\n")) {
        const line = buffer.slice(0, nl)
        buffer = buffer.slice(nl + 1)
        if (line.trim() === "") continue
        const msg = JSON.parse(line) as { QMP?: unknown; id?: string; return?: unknown; error?: unknown }
        if (msg.QMP !== undefined) {
          send({ execute: "qmp_capabilities", id: "caps" })
        } else if (msg.id === "caps") {
          send({ execute: "query-qmp-schema", id: "schema" })
          send({ execute: "query-version", id: "version" })
        } else if (msg.id === "schema" || msg.id === "version") {
          if (msg.error !== undefined) reject(new Error(`${msg.id}: ${JSON.stringify(msg.error)}`))
          replies.set(msg.id, msg.return)
          if (replies.size === 2) send({ execute: "quit", id: "quit" })
        }
      }
    })
  })
