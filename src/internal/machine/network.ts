/**
 * User-mode networking (slirp): the `-netdev user` + virtio-net arguments of
 * `addNetwork`, and the running machine's forwards read and added through
 * HMP (`info usernet`, `hostfwd_add`), which QMP has no command for.
 */
import { Duration, Effect, Schedule } from "effect"
import * as net from "node:net"
import { MachineError, QmpTimeoutError } from "../../Errors.js"
import type { QmpArgumentError, QmpCommandError, QmpError } from "../../Errors.js"
import type * as Api from "../../QemuMachine.js"

const LOOPBACK = "127.0.0.1"

const checkPort = (what: string, port: number, min: number): void => {
  if (!Number.isInteger(port) || port < min || port > 65535) {
    throw new Error(`${what} must be a whole number in ${min}..65535, got ${port}`)
  }
}

export const toForward = (forward: Api.ForwardOptions): Api.Forward => {
  checkPort("guest port", forward.guest, 1)
  checkPort("host port", forward.host ?? 0, 0)
  return { guest: forward.guest, host: forward.host ?? 0, protocol: forward.protocol ?? "tcp" }
}

/** `tcp:127.0.0.1:HOST-:GUEST`: the host side on loopback only, the guest side slirp's default guest. */
export const hostfwd = (forward: Api.Forward): string => `${forward.protocol}:${LOOPBACK}:${forward.host}-:${forward.guest}`

export const networkArgs = (network: Api.Network): Array<string> => [
  "-netdev",
  ["user", `id=${network.id}`, ...network.forwards.map((f) => `hostfwd=${hostfwd(f)}`)].join(","),
  "-device",
  `virtio-net-pci,netdev=${network.id},id=${network.id}-dev`
]

/** One row of `info usernet`. */
export interface UsernetEntry {
  readonly netdev: string
  readonly protocol: string
  readonly state: string
  readonly sourcePort: number
  readonly destPort: number
}

/**
 * Parses `info usernet`:
 * `Hub -1 (net0):` then rows like
 * `TCP[HOST_FORWARD]  9  127.0.0.1 45077  10.0.2.15  8080  0  0`.
 */
export const parseUsernet = (text: string): Array<UsernetEntry> => {
  const entries: Array<UsernetEntry> = []
  let netdev = ""
  for (const line of text.split(/\r?\n/)) {
    const hub = /^\s*(?:Hub\s+-?\d+\s+)?\((\S+)\):\s*$/.exec(line) ?? /^VLAN\s+-?\d+\s+\((\S+)\):/.exec(line)
    if (hub) {
      netdev = hub[1]
      continue
    }
    const row = /^\s*(TCP|UDP)\[([^\]]*)\]\s+-?\d+\s+\S*\s+(\d+)\s+\S*\s+(\d+)\s+\d+\s+\d+\s*$/.exec(line)
    if (row) {
      entries.push({ netdev, protocol: row[1].toLowerCase(), state: row[2], sourcePort: Number(row[3]), destPort: Number(row[4]) })
    }
  }
  return entries
}

type Hmp = (commandLine: string) => Effect.Effect<string, QmpCommandError | QmpArgumentError | QmpError | MachineError>

export interface NetworkDeps {
  readonly networks: ReadonlyArray<Api.Network>
  readonly hmp: Hmp
}

const noNetwork = new MachineError({ message: "no network configured for this machine (use addNetwork)" })

export const make = (deps: NetworkDeps) => {
  const lock = Effect.unsafeMakeSemaphore(1)
  const usernet = Effect.map(deps.hmp("info usernet"), parseUsernet)
  const requireNetwork = deps.networks.length === 0 ? Effect.fail(noNetwork) : Effect.void

  const forwardsOf = (entries: ReadonlyArray<UsernetEntry>, guest: number, protocol: string) =>
    entries.filter((e) => e.state === "HOST_FORWARD" && e.destPort === guest && e.protocol === protocol)

  const forwardedPort = (guest: number, options?: { readonly protocol?: Api.Forward["protocol"] }) =>
    Effect.zipRight(
      requireNetwork,
      usernet.pipe(
        Effect.mapError((e) => e._tag === "MachineError" ? e : new MachineError({ message: `info usernet failed: ${e.message}`, cause: e })),
        Effect.flatMap((entries) => {
          const found = forwardsOf(entries, guest, options?.protocol ?? "tcp")
          return found.length > 0
            ? Effect.succeed(found[found.length - 1].sourcePort)
            : Effect.fail(new MachineError({ message: `no host port forwards to guest port ${guest}` }))
        })
      )
    )

  const addForward = (options: Api.ForwardOptions) =>
    Effect.zipRight(
      requireNetwork,
      Effect.try({
        try: () => toForward(options),
        catch: (e) => new MachineError({ message: `addForward: ${(e as Error).message}` })
      })
    ).pipe(
      Effect.flatMap((forward) =>
        lock.withPermits(1)(Effect.gen(function*() {
          const before = new Set(forwardsOf(yield* usernet, forward.guest, forward.protocol).map((e) => e.sourcePort))
          const out = (yield* deps.hmp(`hostfwd_add ${deps.networks[0].id} ${hostfwd(forward)}`)).trim()
          if (out !== "") return yield* Effect.fail(new MachineError({ message: `hostfwd_add ${hostfwd(forward)}: ${out}` }))
          const added = forwardsOf(yield* usernet, forward.guest, forward.protocol).filter((e) => !before.has(e.sourcePort))
          if (added.length === 0) {
            return yield* Effect.fail(new MachineError({ message: `hostfwd_add ${hostfwd(forward)}: not listed by info usernet` }))
          }
          return added[0].sourcePort
        }))
      )
    )

  /**
   * One connection to the host port: true when it receives data (a banner) or
   * slirp's side towards the guest is ESTABLISHED within `settle` (slirp
   * accepts on the host side before the guest answers, and drops the
   * connection when the guest resets it); false when it closes or fails.
   */
  const probe = (port: number, settle: Duration.Duration, established: Effect.Effect<boolean>) =>
    Effect.acquireUseRelease(
      Effect.sync(() => {
        const socket = net.connect({ host: LOOPBACK, port })
        socket.on("error", () => {})
        return socket
      }),
      (socket) => {
        const socketSays = Effect.async<boolean>((resume) => {
          let done = false
          const on = (ok: boolean) => () => {
            if (done) return
            done = true
            resume(Effect.succeed(ok))
          }
          socket.once("data", on(true))
          socket.once("close", on(false))
        })
        const guestAccepted = established.pipe(
          Effect.repeat({ until: (ok) => ok, schedule: Schedule.spaced(Duration.millis(50)) }),
          Effect.timeoutTo({ duration: settle, onTimeout: () => false, onSuccess: () => true })
        )
        return Effect.raceFirst(socketSays, guestAccepted)
      },
      (socket) => Effect.sync(() => socket.destroy())
    )

  const waitForPort = (guest: number, options?: { readonly timeout?: Duration.DurationInput | undefined }) => {
    const timeout = Duration.decode(options?.timeout ?? Duration.seconds(60))
    const established = usernet.pipe(
      Effect.map((entries) => entries.some((e) => e.protocol === "tcp" && e.destPort === guest && e.state === "ESTABLISHED")),
      Effect.orElseSucceed(() => false)
    )
    return forwardedPort(guest).pipe(
      Effect.flatMap((port) =>
        probe(port, Duration.seconds(2), established).pipe(
          Effect.repeat({ until: (ok) => ok, schedule: Schedule.spaced(Duration.millis(100)) }),
          Effect.timeoutFail({
            duration: timeout,
            onTimeout: () => new QmpTimeoutError({ operation: `waitForPort ${guest}`, timeout })
          })
        )
      ),
      Effect.asVoid
    )
  }

  return { forwardedPort, addForward, waitForPort }
}
