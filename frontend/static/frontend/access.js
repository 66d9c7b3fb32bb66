// What the dashboard tells the user when the server refuses something: the stream
// closed with 4401/4403, symbols refused as forbidden, or dropped when a right was
// withdrawn (docs/protocol.md). Pure text, no DOM, so node's test runner covers it.

import { State } from "./protocol-client.js";

/**
 * The banner for a connection state, or null when there is nothing to say.
 * @returns {{text: string, link: string} | null} link: the sign-in link's text
 */
export function accessNotice(state, { reason = "", signedIn = false } = {}) {
  if (state === State.UNAUTHORIZED) {
    return {
      text: signedIn
        ? "Your session is no longer valid, so the price stream was closed."
        : "This server streams prices to signed-in users only.",
      link: "Sign in",
    };
  }
  if (state === State.FORBIDDEN) {
    const why = reason || "your access was revoked (an expired or revoked token, or a sign-out elsewhere)";
    return { text: `The server closed the price stream: ${why}. Click the badge to retry.`, link: "Sign in again" };
  }
  return null;
}

/** The toast for symbols a subscribe was refused as forbidden. */
export function forbiddenNotice(symbols, { signedIn = false } = {}) {
  const list = symbols.join(", ");
  return signedIn
    ? `Not permitted: ${list}. Your account is not entitled to ${symbols.length === 1 ? "this symbol" : "these symbols"}.`
    : `Not permitted: ${list}. Sign in with an account entitled to ${symbols.length === 1 ? "it" : "them"}.`;
}

/** The toast for symbols the server dropped on its own ("unsubscribed" with a reason). */
export function withdrawnNotice(symbols, reason) {
  const list = symbols.join(", ");
  if (reason === "forbidden") return `Access withdrawn: ${list}. Your account is no longer entitled to ${symbols.length === 1 ? "it" : "them"}.`;
  return `The server stopped streaming ${list} (${reason}).`;
}
