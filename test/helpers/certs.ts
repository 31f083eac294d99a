/**
 * Certificates for the fleet's TLS tests and `npm run fleet:check`, made with
 * Debian's `openssl` in a directory of the caller: the fleet's CA, a runner's
 * and a client's certificate, another CA with a certificate of its own, and
 * an expired certificate of the fleet's CA.
 */
import * as cp from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"

export interface Pair {
  readonly cert: string
  readonly key: string
}

export interface Certs {
  readonly ca: string
  readonly runner: Pair
  readonly client: Pair
  /** Signed by another CA. */
  readonly foreign: Pair
  /** Signed by the fleet's CA, expired. */
  readonly expired: Pair
}

const openssl = (dir: string, args: ReadonlyArray<string>) =>
  cp.execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] })

const key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]

const makeCa = (dir: string, name: string) =>
  openssl(dir, ["req", "-x509", ...key, "-keyout", `${name}.key`, "-out", `${name}.pem`, "-days", "2", "-subj", `/CN=${name}`])

const makeLeaf = (dir: string, name: string, ca: string, days: number): Pair => {
  openssl(dir, ["req", ...key, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`])
  // a negative `-days` gives a certificate whose notAfter lies before its notBefore: expired
  openssl(dir, [
    "x509", "-req", "-in", `${name}.csr`, "-CA", `${ca}.pem`, "-CAkey", `${ca}.key`, "-CAcreateserial",
    "-out", `${name}.pem`, "-days", String(days)
  ])
  return { cert: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}.key`) }
}

/** Writes everything into `dir` (which must exist); returns file paths. */
export const makeCerts = (dir: string): Certs => {
  makeCa(dir, "fleet-ca")
  makeCa(dir, "other-ca")
  return {
    ca: path.join(dir, "fleet-ca.pem"),
    runner: makeLeaf(dir, "runner", "fleet-ca", 2),
    client: makeLeaf(dir, "client", "fleet-ca", 2),
    foreign: makeLeaf(dir, "foreign", "other-ca", 2),
    expired: makeLeaf(dir, "expired", "fleet-ca", -1)
  }
}

/** The outcome of a TLS handshake with a server, as a peer with `pair` (or none) trusting `ca`. */
export const handshake = (
  port: number,
  ca: string,
  pair: Pair | undefined
): Promise<{ readonly ok: boolean; readonly error?: string }> =>
  new Promise((resolve) => {
    // dynamic: this file is imported by scripts too, where node:tls is only needed here
    import("node:tls").then((Tls) => {
      const socket = Tls.connect({
        host: "127.0.0.1",
        port,
        ca: fs.readFileSync(ca, "utf8"),
        ...(pair ? { cert: fs.readFileSync(pair.cert, "utf8"), key: fs.readFileSync(pair.key, "utf8") } : {}),
        checkServerIdentity: () => undefined
      })
      let done = false
      const finish = (result: { readonly ok: boolean; readonly error?: string }) => {
        if (done) return
        done = true
        socket.destroy()
        resolve(result)
      }
      // TLS 1.3: the server checks the client's certificate after the client
      // thinks the handshake is over; a refused client sees an alert or EOF
      // right after, an accepted one sees nothing until it writes.
      socket.once("secureConnect", () => setTimeout(() => finish({ ok: true }), 1000))
      socket.on("error", (error) => finish({ ok: false, error: error.message }))
      socket.on("close", () => finish({ ok: false, error: "closed" }))
      socket.on("end", () => finish({ ok: false, error: "ended" }))
    })
  })
