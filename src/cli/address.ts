/**
 * Addresses on the command line: a unix socket path, or `host:port`
 * (`[v6]:port` for IPv6).
 *
 * @since 0.2.0
 */
import { Either } from "effect"
import type { QmpClient } from "../index.js"

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
  const trimmed = text.trim()
  if (trimmed === "") return Either.left("no address given (pass one, or set QMP_SOCKET)")
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
