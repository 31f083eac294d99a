/**
 * Test support: a tiny real Linux guest to boot under TCG (`Guest`), and a
 * real Debian 12 one with systemd, the agent and SSH (`DebianImage`, `DebianGuest`).
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as Guest from "./Guest.js"
/** @since 0.3.0 */
export * as DebianImage from "./DebianImage.js"
/** @since 0.3.0 */
export * as DebianGuest from "./DebianGuest.js"
