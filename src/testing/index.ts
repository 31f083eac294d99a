/**
 * Test support: a tiny real Linux guest to boot under TCG.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as Guest from "./Guest.js"
