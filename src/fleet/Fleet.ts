/**
 * A fleet of QEMU machines across hosts, on `@effect/cluster`: runners host
 * the VMs (`runnerLayer`), clients launch and drive them (`Fleet`), and the
 * cluster's storage (SQLite on one host, PostgreSQL across hosts) says which
 * runner owns which VM.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Fleet } from "effect-qemu/fleet"
 *
 * const program = Effect.gen(function* () {
 *   const fleet = yield* Fleet.Fleet
 *   const vm = yield* fleet.launch("vm-1", { binary: "qemu-system-x86_64", machine: "none" })
 *   return yield* vm.command("query-status")
 * }).pipe(Effect.scoped)
 *
 * // one host, embedded SQLite storage; run it with Effect.runPromise(main)
 * const main = Effect.provide(program, Fleet.runnerLayer())
 * ```
 *
 * @since 0.2.0
 */
import * as MessageStorage from "@effect/cluster/MessageStorage"
import * as RunnerAddress from "@effect/cluster/RunnerAddress"
import * as RunnerHealth from "@effect/cluster/RunnerHealth"
import type * as RunnerStorage from "@effect/cluster/RunnerStorage"
import * as Runners from "@effect/cluster/Runners"
import * as Sharding from "@effect/cluster/Sharding"
import * as ShardingConfig from "@effect/cluster/ShardingConfig"
import * as SocketRunner from "@effect/cluster/SocketRunner"
import * as SqlMessageStorage from "@effect/cluster/SqlMessageStorage"
import * as SqlRunnerStorage from "@effect/cluster/SqlRunnerStorage"
import type { SocketServerError } from "@effect/platform/SocketServer"
import * as RpcSerialization from "@effect/rpc/RpcSerialization"
import type { SqlError } from "@effect/sql/SqlError"
import type { ConfigError } from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Os from "node:os"
import * as QemuMachine from "../QemuMachine.js"
import type * as Qapi from "../Qapi.js"
import type * as QmpMessage from "../QmpMessage.js"
import * as FleetErrors from "./FleetErrors.js"
import * as Registry from "./internal/registry.js"
import * as MachineSpec from "./MachineSpec.js"
import * as Policy from "./Policy.js"
import * as StorageLayer from "./internal/storage.js"
import * as Transport from "./internal/transport.js"
import * as VmEntity from "./VmEntity.js"

// ---------------------------------------------------------------------------
// storage

/**
 * Where the cluster keeps runners, shard locks and the VM registry.
 *
 * @since 0.2.0
 * @category models
 */
export type Storage = StorageLayer.Storage

/**
 * One host: SQLite, in memory by default (the fleet lives as long as the
 * process), or in `filename` (then an id launched before a restart answers
 * `VmLost` after it).
 *
 * @since 0.2.0
 * @category storage
 */
export const sqlite = (filename?: string): Storage => ({ _tag: "Sqlite", filename })

/**
 * Several hosts: one PostgreSQL database shared by every runner and client.
 *
 * @since 0.2.0
 * @category storage
 */
export const postgres = (url: string): Storage => ({ _tag: "Postgres", url })

// ---------------------------------------------------------------------------
// transport

/**
 * The fleet's certificates, for mutual TLS between runners and clients: the
 * fleet's CA, and this member's certificate (signed by that CA) and key. Each
 * is PEM text or the path of a PEM file (read when the layer starts).
 *
 * Every member presents its certificate and checks the other's against `ca`
 * (and only `ca`): a peer without a certificate, with another CA's, or with
 * an expired one is refused during the handshake. Host names are not checked:
 * the CA is what a fleet trusts. A refused member is not told why (the
 * handshake is reset): its calls wait while the cluster retries.
 *
 * @since 0.3.0
 * @category transport
 */
export interface Tls {
  readonly _tag: "Tls"
  readonly ca: string
  readonly cert: string
  readonly key: string
}

/**
 * @since 0.3.0
 * @category transport
 */
export const tls = (options: { readonly ca: string; readonly cert: string; readonly key: string }): Tls => ({
  _tag: "Tls",
  ca: options.ca,
  cert: options.cert,
  key: options.key
})

const transportMode = (
  options: { readonly tls?: Tls | undefined; readonly insecure?: boolean | undefined }
): Effect.Effect<Transport.Mode, ConfigError> =>
  options.tls === undefined
    ? Effect.succeed({ _tag: "Plain", insecure: options.insecure === true })
    : Effect.map(Transport.load(options.tls), (material) => ({ _tag: "Tls", material }))

/**
 * A runner's policy: what launches and QMP commands it accepts from the
 * fleet. Strict without options; see the `Policy` module for every rule and why.
 *
 * @since 0.3.0
 * @category policy
 */
export const policy: (options?: Policy.Options) => Policy.Policy = Policy.make

// ---------------------------------------------------------------------------
// client

/**
 * A VM running on some runner of the fleet.
 *
 * @since 0.2.0
 * @category models
 */
export interface RemoteMachine {
  /** The VM's entity id. */
  readonly id: string
  /** The runner hosting it, `host:port`. */
  readonly runner: string
  /** QEMU's machine name on the runner. */
  readonly name: string
  /**
   * Runs a QMP command and returns its `return` value: typed like
   * `vm.command` for every command of the generated schema (arguments checked
   * at compile time; the runner checks the reply against its QEMU's schema),
   * untyped for any other name.
   */
  readonly command: Qapi.Execute<never, CallError, never>
  /** Runs a QMP command and returns the raw response. */
  readonly qmp: (
    command: string,
    args?: Readonly<Record<string, unknown>>
  ) => Effect.Effect<QmpMessage.Response, CallError>
  /** Waits for an event named `name` (matching `match`): typed like `vm.eventWait` for known events. */
  readonly eventWait: Qapi.EventWait<
    { readonly timeout?: Duration.DurationInput | undefined },
    QmpMessage.Event,
    CallError,
    never
  >
  /** The machine's run state. */
  readonly state: Effect.Effect<VmEntity.MachineState, FleetErrors.VmLost | FleetErrors.VmNotFound | FleetErrors.MachineError>
  /** Stops QEMU (soft, then hard) on its runner. Idempotent; also forgets a lost VM. */
  readonly shutdown: (
    options?: { readonly hard?: boolean | undefined; readonly timeout?: Duration.DurationInput | undefined }
  ) => Effect.Effect<void, FleetErrors.AbnormalShutdown | FleetErrors.MachineError>
}

/**
 * @since 0.2.0
 * @category models
 */
export type CallError =
  | FleetErrors.QmpCommandError
  | FleetErrors.QmpConnectionError
  | FleetErrors.QmpProtocolError
  | FleetErrors.QmpTimeoutError
  | FleetErrors.QmpArgumentError
  | FleetErrors.MachineError
  | FleetErrors.VmLost
  | FleetErrors.VmNotFound
  | FleetErrors.PolicyDenied

/**
 * @since 0.2.0
 * @category models
 */
export type LaunchError =
  | FleetErrors.LaunchFailure
  | FleetErrors.VmLost
  | FleetErrors.VmAlreadyLaunched
  | FleetErrors.MachineError
  | FleetErrors.InvalidSpec
  | FleetErrors.PolicyDenied

/**
 * @since 0.2.0
 * @category models
 */
export interface LaunchOptions {
  /** How often the client says it is still there (default 5 s). */
  readonly heartbeat?: Duration.DurationInput | undefined
  /** Shut down at the end of the scope with `{ hard }` (default soft, then hard). */
  readonly hard?: boolean | undefined
}

/**
 * The fleet client.
 *
 * @since 0.2.0
 * @category models
 */
export interface Service {
  /**
   * Launches a VM under `id` on the runner that owns the id. The VM lives as
   * long as the scope: closing it shuts the VM down; while it is open, a
   * heartbeat keeps it; a client that dies stops the heartbeat, and the runner
   * shuts the VM down after its `vmIdleTimeout`.
   */
  readonly launch: (
    id: string,
    config: MachineSpec.MachineSpec | QemuMachine.Config,
    options?: LaunchOptions
  ) => Effect.Effect<RemoteMachine, LaunchError, Scope.Scope>
  /**
   * Shuts down the VM under `id` wherever it runs; for a lost VM, forgets it,
   * so that the id can be launched again.
   */
  readonly shutdown: (
    id: string,
    options?: { readonly hard?: boolean | undefined; readonly timeout?: Duration.DurationInput | undefined }
  ) => Effect.Effect<void, FleetErrors.AbnormalShutdown | FleetErrors.MachineError>
  /** A handle on a VM launched elsewhere (no heartbeat, no shutdown at the end). */
  readonly attach: (id: string) => Effect.Effect<RemoteMachine, FleetErrors.VmLost | FleetErrors.VmNotFound | FleetErrors.MachineError>
}

/**
 * @since 0.2.0
 * @category tags
 */
export class Fleet extends Context.Tag("effect-qemu/fleet/Fleet")<Fleet, Service>() {}

/** Cluster-level failures of a call (mailbox full, storage) as a `MachineError`. */
const clusterFailure = <A, E extends { readonly _tag: string }, R>(
  effect: Effect.Effect<A, E, R>
): Effect.Effect<
  A,
  Exclude<E, { readonly _tag: "MailboxFull" | "AlreadyProcessingMessage" | "PersistenceError" }> | FleetErrors.MachineError,
  R
> =>
  Effect.catchIf(
    effect,
    (e): e is Extract<E, { readonly _tag: "MailboxFull" | "AlreadyProcessingMessage" | "PersistenceError" }> =>
      e._tag === "MailboxFull" || e._tag === "AlreadyProcessingMessage" || e._tag === "PersistenceError",
    (e) => Effect.fail(new FleetErrors.MachineError({ message: `fleet: ${e._tag}` }))
  ) as never

/**
 * The client over this process's `Sharding` (a runner's or a client-only one).
 *
 * @since 0.2.0
 * @category constructors
 */
export const make: Effect.Effect<Service, never, Sharding.Sharding> = Effect.gen(function*() {
  const makeClient = yield* VmEntity.Vm.client

  const remote = (id: string, launched: VmEntity.Launched): RemoteMachine => {
    const client = makeClient(id)
    return {
      id,
      runner: launched.runner,
      name: launched.name,
      // the same call for typed and untyped names: the types are the caller's, the checks the runner's
      command: ((command: string, args?: Readonly<Record<string, unknown>>) =>
        clusterFailure(client.Command({ command, args }))) as RemoteMachine["command"],
      qmp: (command, args) => clusterFailure(client.Qmp({ command, args })),
      eventWait: ((
        name: string,
        options?: { readonly match?: unknown; readonly timeout?: Duration.DurationInput | undefined }
      ) =>
        clusterFailure(client.EventWait({
          name,
          match: options?.match,
          timeout: options?.timeout === undefined ? undefined : Duration.decode(options.timeout)
        }))) as RemoteMachine["eventWait"],
      state: clusterFailure(client.State()),
      shutdown: (options) =>
        clusterFailure(client.Shutdown({
          hard: options?.hard,
          timeout: options?.timeout === undefined ? undefined : Duration.decode(options.timeout)
        }))
    }
  }

  const launch: Service["launch"] = (id, config, options) =>
    Effect.gen(function*() {
      const spec = QemuMachine.isConfig(config) ? yield* MachineSpec.fromConfig(config) : config
      const client = makeClient(id)
      const launched = yield* Effect.acquireRelease(
        clusterFailure(client.Launch({ spec })),
        // Also when this process's runner already stopped (its VMs went with it):
        // then the call ends interrupted, which is fine here.
        () =>
          client.Shutdown({ hard: options?.hard }).pipe(
            Effect.timeout(Duration.minutes(1)),
            Effect.exit,
            Effect.asVoid
          )
      )
      yield* client.Touch().pipe(
        // a beat that ends in a defect must not end the beating (the VM would be shut down as idle)
        Effect.catchAllCause((cause) => Effect.logDebug("fleet: a heartbeat failed", cause)),
        Effect.repeat(Schedule.spaced(options?.heartbeat ?? Duration.seconds(5))),
        Effect.interruptible,
        Effect.forkScoped
      )
      return remote(id, launched)
    }).pipe(Effect.withSpan("Fleet.launch", { attributes: { id } }))

  const attach: Service["attach"] = (id) =>
    clusterFailure(makeClient(id).Touch()).pipe(Effect.map((launched) => remote(id, launched)))

  const shutdown: Service["shutdown"] = (id, options) =>
    clusterFailure(makeClient(id).Shutdown({
      hard: options?.hard,
      timeout: options?.timeout === undefined ? undefined : Duration.decode(options.timeout)
    }))

  return Fleet.of({ launch, attach, shutdown })
})

// ---------------------------------------------------------------------------
// layers

/**
 * `host:port`.
 *
 * @since 0.2.0
 * @category models
 */
export interface Address {
  readonly host: string
  readonly port: number
}

/**
 * @since 0.2.0
 * @category models
 */
export interface RunnerOptions {
  /** Default: SQLite in memory (one host). */
  readonly storage?: Storage | undefined
  /**
   * Where other runners and clients reach this runner. Without it the runner
   * is alone (no network); with PostgreSQL storage it is required.
   */
  readonly address?: Address | undefined
  /**
   * Where to listen, when it differs from `address` (e.g. `0.0.0.0`). Without
   * `tls`, only a loopback address is accepted (unless `insecure`).
   */
  readonly listen?: Address | undefined
  /** Mutual TLS with the other members (`Fleet.tls`). */
  readonly tls?: Tls | undefined
  /**
   * Without `tls`, listen and connect on other than loopback anyway, in plain
   * TCP: anyone who reaches the port may launch VMs (within the policy). A
   * warning is logged at start.
   */
  readonly insecure?: boolean | undefined
  /**
   * What the fleet may ask of this runner (`Fleet.policy`); default
   * `Fleet.policy()`: strict (see the `Policy` module for every rule).
   */
  readonly policy?: Policy.Policy | undefined
  /** A VM whose client sends no heartbeat for this long is shut down (default 30 s). */
  readonly vmIdleTimeout?: Duration.DurationInput | undefined
  /** Tuning of the cluster (same for every runner and client of a fleet). */
  readonly shardingConfig?: Partial<ShardingConfig.ShardingConfig["Type"]> | undefined
}

/**
 * @since 0.2.0
 * @category models
 */
export interface ClientOptions {
  readonly storage: Storage
  /** Mutual TLS with the runners (`Fleet.tls`). */
  readonly tls?: Tls | undefined
  /** Without `tls`, talk plain TCP to runners other than on loopback. */
  readonly insecure?: boolean | undefined
  /** Tuning of the cluster (same for every runner and client of a fleet). */
  readonly shardingConfig?: Partial<ShardingConfig.ShardingConfig["Type"]> | undefined
}

/**
 * The cluster settings a fleet uses unless told otherwise: a dead runner is
 * noticed within seconds (health check every 3 s, assignments refreshed every
 * 1.5 s, shard locks expire after 15 s), so that calls on its VMs answer
 * `VmLost` well within 30 s.
 *
 * @since 0.2.0
 * @category layers
 */
export const defaultShardingConfig: Partial<ShardingConfig.ShardingConfig["Type"]> = {
  runnerHealthCheckInterval: Duration.seconds(3),
  refreshAssignmentsInterval: Duration.millis(1500),
  shardLockRefreshInterval: Duration.seconds(4),
  shardLockExpiration: Duration.seconds(15),
  entityTerminationTimeout: Duration.seconds(30)
}

/** The embedded runner's address when it has none: a label only, nothing listens. */
const localAddress = RunnerAddress.make(Os.hostname() || "localhost", 0)

/**
 * Hosts VMs on this host, and provides the `Fleet` client too. Without
 * options: one host, SQLite storage in memory, no network.
 *
 * @since 0.2.0
 * @category layers
 */
export const runnerLayer = (
  options: RunnerOptions = {}
): Layer.Layer<Fleet | Sharding.Sharding, SqlError | ConfigError | SocketServerError> => {
  const storage = options.storage ?? sqlite()
  const config = ShardingConfig.layer({
    ...defaultShardingConfig,
    ...options.shardingConfig,
    runnerAddress: Option.some(options.address ? RunnerAddress.make(options.address.host, options.address.port) : localAddress),
    runnerListenAddress: options.listen ? Option.some(RunnerAddress.make(options.listen.host, options.listen.port)) : Option.none()
  })
  const sharding: Layer.Layer<
    Sharding.Sharding,
    SocketServerError | ConfigError,
    ShardingConfig.ShardingConfig | MessageStorage.MessageStorage | RunnerStorage.RunnerStorage
  > = options.address === undefined
    ? Sharding.layer.pipe(Layer.provide([Runners.layerNoop, RunnerHealth.layerNoop]))
    : networked(options, options.listen ?? options.address)
  const entity = VmEntity.layer({ maxIdleTime: options.vmIdleTimeout ?? Duration.seconds(30), policy: options.policy })
  return Layer.merge(entity, Layer.effect(Fleet, make)).pipe(
    Layer.provideMerge(sharding),
    Layer.provide(base(storage, config))
  )
}

const networked = (
  options: RunnerOptions,
  listen: Address
): Layer.Layer<
  Sharding.Sharding,
  SocketServerError | ConfigError,
  ShardingConfig.ShardingConfig | MessageStorage.MessageStorage | RunnerStorage.RunnerStorage
> =>
  Layer.unwrapEffect(Effect.map(transportMode(options), (mode) =>
    SocketRunner.layer.pipe(
      Layer.provide(RunnerHealth.layerPing.pipe(Layer.provide(Runners.layerRpc))),
      Layer.provide([Transport.socketServer(listen, mode), Transport.clientProtocol(mode)]),
      Layer.provide(RpcSerialization.layerMsgPack)
    )))

const base = (storage: Storage, config: Layer.Layer<ShardingConfig.ShardingConfig>) =>
  StorageLayer.oneAtATime(Layer.mergeAll(
    Layer.orDie(SqlRunnerStorage.layer),
    SqlMessageStorage.layer,
    Registry.layer()
  )).pipe(
    Layer.provideMerge(config),
    Layer.provideMerge(StorageLayer.sqlLayer(storage))
  )

/**
 * A client only: launches and drives VMs on the runners of a fleet, hosts none.
 *
 * @since 0.2.0
 * @category layers
 */
export const clientLayer = (options: ClientOptions): Layer.Layer<Fleet | Sharding.Sharding, SqlError | ConfigError> => {
  const config = ShardingConfig.layer({
    ...defaultShardingConfig,
    ...options.shardingConfig,
    runnerAddress: Option.none(),
    runnerListenAddress: Option.none()
  })
  return Layer.effect(Fleet, make).pipe(
    Layer.provideMerge(SocketRunner.layerClientOnly),
    Layer.provide(Layer.unwrapEffect(Effect.map(transportMode(options), Transport.clientProtocol))),
    Layer.provide(RpcSerialization.layerMsgPack),
    Layer.provide(base(options.storage, config))
  )
}
