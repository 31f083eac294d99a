/**
 * End-to-end tests for the fdpass native addon. Node cannot receive
 * SCM_RIGHTS itself, so a small python3 subprocess plays the receiving peer
 * (as QEMU would): it `recvmsg`s with an ancillary buffer, reads each
 * received descriptor and reports back as JSON on stdout.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { loadFdPass, sendFds, socketFd } from "../src/internal/fdpass.js"

// Mode "listen": bind the path and accept one peer. Mode "connect": dial a
// Node-side server, covering descriptors of accepted (server) sockets too.
const RECEIVER = String.raw`
import array, json, os, socket, sys
mode, path = sys.argv[1], sys.argv[2]
if mode == "listen":
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    print("READY", flush=True)
    conn, _ = srv.accept()
else:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    print("READY", flush=True)
conn.settimeout(10)
fds = array.array("i")
data, anc, flags, _ = conn.recvmsg(4096, socket.CMSG_SPACE(16 * fds.itemsize))
for level, kind, cdata in anc:
    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
        fds.frombytes(cdata[: len(cdata) - len(cdata) % fds.itemsize])
contents = []
for fd in fds:
    contents.append(os.pread(fd, 65536, 0).decode())
    os.close(fd)
print(json.dumps({"data": data.decode(), "truncated": bool(flags & socket.MSG_CTRUNC), "contents": contents}), flush=True)
`

interface Received {
  readonly data: string
  readonly truncated: boolean
  readonly contents: ReadonlyArray<string>
}

interface Receiver {
  readonly ready: Promise<void>
  readonly result: Promise<Received>
  readonly child: ChildProcess
}

const startReceiver = (mode: "listen" | "connect", sockPath: string): Receiver => {
  const child = spawn("python3", ["-c", RECEIVER, mode, sockPath], { stdio: ["ignore", "pipe", "pipe"] })
  let stdout = ""
  let stderr = ""
  let onReady: () => void = () => {}
  const ready = new Promise<void>((resolve) => {
    onReady = resolve
  })
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk
    if (stdout.startsWith("READY\n")) onReady()
  })
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk
  })
  const result = new Promise<Received>((resolve, reject) => {
    child.on("error", reject)
    child.on("close", (code) => {
      const last = stdout.trim().split("\n").at(-1) ?? ""
      if (code !== 0 || !last.startsWith("{")) {
        reject(new Error(`receiver exited with ${String(code)}: ${stderr || stdout}`))
        return
      }
      resolve(JSON.parse(last) as Received)
    })
  })
  // A receiver that dies before READY must fail the test, not hang it.
  const readyOrDeath = Promise.race([ready, result.then(() => {})])
  return { ready: readyOrDeath, result, child }
}

const connect = (sockPath: string): Promise<net.Socket> =>
  new Promise((resolve, reject) => {
    const socket = net.createConnection(sockPath)
    socket.once("connect", () => resolve(socket))
    socket.once("error", reject)
  })

describe("fdpass", () => {
  let dir: string
  const cleanups: Array<() => void> = []

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "fdpass-"))
  })

  afterEach(() => {
    for (const f of cleanups.splice(0).reverse()) {
      try {
        f()
      } catch {
        // best effort: a failed cleanup must not mask the test's own failure
      }
    }
    fs.rmSync(dir, { recursive: true, force: true })
  })

  const tempFile = (name: string, contents: string): number => {
    const file = path.join(dir, name)
    fs.writeFileSync(file, contents)
    const fd = fs.openSync(file, "r")
    cleanups.push(() => fs.closeSync(fd))
    return fd
  }

  it("loads the native binding", () => {
    const binding = loadFdPass()
    // Surface the loader's reason in the failure message if it is a string.
    expect(typeof binding === "string" ? binding : "loaded").toBe("loaded")
  })

  it("passes a file descriptor to a peer that listens (client socket)", async () => {
    const sockPath = path.join(dir, "recv.sock")
    const receiver = startReceiver("listen", sockPath)
    cleanups.push(() => receiver.child.kill())
    await receiver.ready

    const client = await connect(sockPath)
    cleanups.push(() => client.destroy())
    const fd = socketFd(client)
    expect(fd).toBeTypeOf("number")

    const fileFd = tempFile("hello.txt", "hello from node\n")
    const payload = new TextEncoder().encode("fd:1")
    expect(sendFds(fd!, [fileFd], payload)).toEqual({ _tag: "Ok", sent: payload.length })

    await expect(receiver.result).resolves.toEqual({
      data: "fd:1",
      truncated: false,
      contents: ["hello from node\n"]
    })
  }, 15_000)

  it("passes several descriptors from an accepted server-side socket", async () => {
    const sockPath = path.join(dir, "node.sock")
    const server = net.createServer()
    cleanups.push(() => server.close())
    const accepted = new Promise<net.Socket>((resolve) => server.once("connection", resolve))
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject)
      server.listen(sockPath, resolve)
    })

    const receiver = startReceiver("connect", sockPath)
    cleanups.push(() => receiver.child.kill())
    await receiver.ready
    const peer = await accepted
    cleanups.push(() => peer.destroy())

    const a = tempFile("a.txt", "alpha")
    const b = tempFile("b.txt", "beta")
    const res = sendFds(socketFd(peer)!, [a, b], new TextEncoder().encode("two"))
    expect(res).toEqual({ _tag: "Ok", sent: 3 })

    await expect(receiver.result).resolves.toEqual({ data: "two", truncated: false, contents: ["alpha", "beta"] })
  }, 15_000)

  it("reports EBADF for a descriptor that is not open", () => {
    // Far above any fd this process could have open.
    const res = sendFds(1 << 29, [], new Uint8Array([1]))
    expect(res).toMatchObject({ _tag: "Err", code: "EBADF" })
    if (res._tag === "Err") expect(res.message).toMatch(/bad file descriptor/i)
  })

  it("reports ENOTSOCK when the target is not a socket", () => {
    const fileFd = tempFile("plain.txt", "x")
    expect(sendFds(fileFd, [fileFd], new Uint8Array([1]))).toMatchObject({ _tag: "Err", code: "ENOTSOCK" })
  })

  it("rejects empty data before reaching the kernel", () => {
    const fileFd = tempFile("empty.txt", "x")
    expect(sendFds(fileFd, [fileFd], new Uint8Array(0))).toMatchObject({ _tag: "Err", code: "EINVAL" })
  })

  it("rejects malformed descriptors", () => {
    expect(sendFds(-1, [], new Uint8Array([1]))).toMatchObject({ _tag: "Err", code: "EINVAL" })
    expect(sendFds(3, [1.5], new Uint8Array([1]))).toMatchObject({ _tag: "Err", code: "EINVAL" })
  })

  it("socketFd is undefined for a socket without a handle", () => {
    expect(socketFd(new net.Socket())).toBeUndefined()
  })
})
