/**
 * `effect-qemu/fleet`: QEMU machines across hosts on `@effect/cluster`.
 * Needs the optional peer dependencies `@effect/cluster`, `@effect/rpc`,
 * `@effect/sql` and one driver (`@effect/sql-sqlite-node` for one host,
 * `@effect/sql-pg` for several), loaded when a layer starts: the other one
 * need not be installed.
 *
 * @since 0.2.0
 */

/**
 * @since 0.2.0
 */
export * as Fleet from "./Fleet.js"

/**
 * @since 0.2.0
 */
export * as FleetErrors from "./FleetErrors.js"

/**
 * @since 0.2.0
 */
export * as MachineSpec from "./MachineSpec.js"

/**
 * @since 0.2.0
 */
export * as VmEntity from "./VmEntity.js"

/**
 * @since 0.3.0
 */
export * as Policy from "./Policy.js"
