/**
 * effect-qemu: run QEMU virtual machines as scoped Effect resources and drive
 * them over QMP.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as Errors from "./Errors.js"
/** @since 0.1.0 */
export * as EventMatch from "./EventMatch.js"
/** @since 0.1.0 */
export * as QmpClient from "./QmpClient.js"
/** @since 0.1.0 */
export * as QmpMessage from "./QmpMessage.js"
/** @since 0.1.0 */
export * as ConsoleSocket from "./ConsoleSocket.js"
/** @since 0.1.0 */
export * as QemuMachine from "./QemuMachine.js"
/** @since 0.2.0 */
export * as Qapi from "./Qapi.js"
/** @since 0.2.0 */
export * as GuestAgent from "./GuestAgent.js"
/** @since 0.3.0 */
export * as Snapshot from "./Snapshot.js"
/** @since 0.3.0 */
export * as Image from "./Image.js"
