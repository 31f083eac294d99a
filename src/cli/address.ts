/**
 * Addresses on the command line: a unix socket path, or `host:port`
 * (`[v6]:port` for IPv6), also in QEMU's own syntax (`unix:PATH`,
 * `tcp:HOST:PORT`, options after a comma ignored: `unix:/tmp/q.sock,server=on`).
 *
 * @since 0.2.0
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as dns from "node:dns"
import * as fs from "node:fs"
import * as net from "node:net"
import type * as QmpClient from "../QmpClient.js"
import { CliFailure, EXIT_FATAL } from "./errors.js"

/**
 * The longest AF_UNIX path the kernel accepts (sun_path is 108 bytes, NUL included).
 *
 * @since 0.2.0
 * @category constants
 */
export const UNIX_PATH_MAX = 107

/**
 * Reads an address; `Left` holds what is wrong with it.
 *
 * @since 0.2.0
 * @category parsing
 */
export const parse = (text: string): Either.Either<QmpClient.Address, string> => {
  let trimmed = text.trim()
  if (trimmed === "") return Either.left("no address given (pass one, or set QMP_SOCKET)")
  // QEMU's chardev syntax: `unix:PATH[,opts]`, `tcp:HOST:PORT[,opts]`.
  const qemu = /^(unix|tcp):(.*)$/.exec(trimmed)
  if (qemu) {
    const rest = qemu[2]!.split(",")[0]!.trim()
    if (rest === "") return Either.left(`bad address '${trimmed}': nothing after '${qemu[1]}:'`)
    if (qemu[1] === "tcp") {
      const parsed = parse(rest)
      return Either.isRight(parsed) && typeof parsed.right === "string"
        ? Either.left(`bad address '${trimmed}': expected tcp:HOST:PORT`)
        : parsed
    }
    trimmed = rest
  }
  const tcp = /^(?:\[([^\]]+)\]|([^/:[\]]+)):([^:/]*)$/.exec(trimmed)
  if (tcp && !trimmed.includes("/")) {
    const host = tcp[1] ?? tcp[2]!
    const port = tcp[3]!
    if (!/^\d+$/.test(port) || Number(port) < 1 || Number(port) > 65535) {
      return Either.left(`bad address '${trimmed}': the port must be a number from 1 to 65535`)
    }
    return Either.right({ host, port: Number(port) })
  }
  const bytes = Buffer.byteLength(trimmed)
  if (bytes > UNIX_PATH_MAX) {
    return Either.left(`bad address: unix socket path is ${bytes} bytes, over the ${UNIX_PATH_MAX}-byte limit`)
  }
  return Either.right(trimmed)
}

/**
 * @since 0.2.0
 * @category formatting
 */
export const format = (address: QmpClient.Address): string =>
  typeof address === "string"
    ? address
    : address.host.includes(":")
    ? `[${address.host}]:${address.port}`
    : `${address.host}:${address.port}`

const fileKind = (stat: fs.Stats): string =>
  stat.isDirectory()
    ? "a directory"
    : stat.isFile()
    ? "a regular file"
    : stat.isFIFO()
    ? "a FIFO"
    : stat.isCharacterDevice() || stat.isBlockDevice()
    ? "a device"
    : "not a socket"

const fatal = (message: string) => new CliFailure({ message, exitCode: EXIT_FATAL })

/**
 * Checks what can be checked before connecting, so that the failure says
 * what is wrong: a path that is not a socket, a host name that does not
 * resolve.
 *
 * @since 0.3.0
 * @category checks
 */
export const check = (address: QmpClient.Address): Effect.Effect<void, CliFailure> => {
  if (typeof address === "string") {
    return Effect.suspend(() => {
      let stat: fs.Stats
      try {
        stat = fs.statSync(address)
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code
        return Effect.fail(fatal(
          code === "ENOENT"
            ? `cannot connect to ${address}: no such socket (ENOENT)`
            : `cannot connect to ${address}: ${code ?? String(e)}`
        ))
      }
      return stat.isSocket() ? Effect.void : Effect.fail(fatal(`${address} is not a socket (it is ${fileKind(stat)})`))
    })
  }
  if (net.isIP(address.host) !== 0) return Effect.void
  return Effect.async<void, CliFailure>((resume) => {
    dns.lookup(address.host, (error) => {
      resume(error ? Effect.fail(fatal(`cannot resolve ${address.host}${error.code ? ` (${error.code})` : ""}`)) : Effect.void)
    })
  })
}
