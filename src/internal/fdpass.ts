/**
 * Loader and typed wrapper for the `fdpass` native addon, which sends file
 * descriptors over a connected AF_UNIX socket (SCM_RIGHTS) — something Node's
 * net module cannot do. Nothing here throws: an unbuilt or broken addon is
 * reported as a value so callers can degrade (e.g. fall back to path-based
 * QEMU options) instead of crashing at import time.
 */
import { createRequire } from "node:module"
import type { Socket } from "node:net"
import { join } from "node:path"
import { findBuilt } from "./native.js"

/** Shape of the compiled addon's exports. */
export interface FdPassBinding {
  sendFds(sockFd: number, fds: ReadonlyArray<number>, data: Uint8Array): number
}

export type SendFdsResult =
  | { readonly _tag: "Ok"; readonly sent: number }
  | { readonly _tag: "Err"; readonly code: string; readonly message: string }

const ADDON_PATH = join("build", "Release", "fdpass.node")

// A native module can only be loaded once per process anyway, so memoising
// the outcome (binding or reason) in module state costs nothing in purity.
let cached: FdPassBinding | string | undefined

const isBinding = (u: unknown): u is FdPassBinding =>
  typeof u === "object" && u !== null && typeof (u as { sendFds?: unknown }).sendFds === "function"

const messageOf = (e: unknown): string => (e instanceof Error ? e.message : String(e))

/**
 * Returns the native binding, or a human-readable reason it is unavailable.
 */
export const loadFdPass = (): FdPassBinding | string => {
  if (cached !== undefined) return cached
  const path = findBuilt("fdpass.node")
  if (path === undefined) {
    cached = `fdpass native addon not built: ${ADDON_PATH} not found (run \`npm run install\` in the package root)`
    return cached
  }
  try {
    const mod: unknown = createRequire(import.meta.url)(path)
    cached = isBinding(mod) ? mod : `fdpass native addon at ${path} does not export sendFds`
  } catch (e) {
    cached = `fdpass native addon at ${path} failed to load: ${messageOf(e)}`
  }
  return cached
}

const isFd = (n: number): boolean => Number.isInteger(n) && n >= 0 && n <= 0x7fffffff

const err = (code: string, message: string): SendFdsResult => ({ _tag: "Err", code, message })

/**
 * Sends `data` plus the descriptors `fds` in one non-blocking `sendmsg` on
 * `sockFd`. Errors come back as `{ _tag: "Err", code }` where `code` is the
 * errno name (e.g. "EAGAIN", "EBADF"); "UNAVAILABLE" means the addon could
 * not be loaded. A short write (`sent < data.length`) is possible; the
 * descriptors travel with the first byte, so only the remaining bytes need
 * resending.
 */
export const sendFds = (sockFd: number, fds: ReadonlyArray<number>, data: Uint8Array): SendFdsResult => {
  // Checked here, not only in C: an empty payload would make the kernel
  // silently drop the descriptors, and a clear Err beats a TypeError.
  if (data.length === 0) return err("EINVAL", "sendFds: data must be non-empty (descriptors ride on payload bytes)")
  if (!isFd(sockFd)) return err("EINVAL", `sendFds: invalid socket fd ${String(sockFd)}`)
  for (const fd of fds) {
    if (!isFd(fd)) return err("EINVAL", `sendFds: invalid file descriptor ${String(fd)}`)
  }
  const binding = loadFdPass()
  if (typeof binding === "string") return err("UNAVAILABLE", binding)
  try {
    return { _tag: "Ok", sent: binding.sendFds(sockFd, fds, data) }
  } catch (e) {
    const code = typeof e === "object" && e !== null ? (e as { code?: unknown }).code : undefined
    return err(typeof code === "string" ? code : "UNKNOWN", messageOf(e))
  }
}

/**
 * The OS file descriptor behind a connected `net.Socket`, read from Node's
 * private `_handle` because there is no public API for it. `undefined` when
 * the socket is not (or no longer) backed by a real descriptor.
 */
export const socketFd = (socket: Socket): number | undefined => {
  const handle: unknown = (socket as unknown as { readonly _handle?: unknown })._handle
  if (typeof handle !== "object" || handle === null) return undefined
  const fd: unknown = (handle as { readonly fd?: unknown }).fd
  return typeof fd === "number" && Number.isInteger(fd) && fd >= 0 ? fd : undefined
}
