/**
 * Our own guest tests that do not test booting itself run on clones of one
 * template per configuration, cached in `.cache/templates` (git-ignored) so
 * that every test file and every later run reuses it: one boot per
 * configuration for the whole suite, none once cached. A rebuilt guest or
 * another QEMU gets its own template (the key holds both).
 */
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Guest } from "../../src/testing/index.js"

export const templateCache = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", ".cache", "templates")

/** `Guest.template` with the suite's cache. */
export const guestTemplate = (options: Guest.TemplateOptions = {}) => Guest.template({ ...options, cacheDir: templateCache })
