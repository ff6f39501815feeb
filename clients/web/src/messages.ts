// What went wrong, in words a person can act on. The server's own messages name fields, status
// codes and environment variables: they go to the developer log; the page says what it means.

import { Code, ConnectError } from "@connectrpc/connect";

/** How a failed request should be handled: the server cannot be reached, wants a token, or
 * refused this one request. */
export type Trouble = "unreachable" | "token" | "refused";

export interface Problem {
  trouble: Trouble;
  /** For people, to show where they are looking. */
  text: string;
  /** For the developer log: the code and the server's message. */
  detail: string;
}

const UNREACHABLE = "The voice agent server cannot be reached. It may be stopped or restarting.";
export const TOKEN_NEEDED = "This server needs an access token.";

/** A failed unary RPC (Connect) as a Problem; `what` names the action, e.g. "The preview". */
export function rpcProblem(error: unknown, what: string): Problem {
  if (!(error instanceof ConnectError)) {
    const message = error instanceof Error ? error.message : String(error);
    return { trouble: "refused", text: `${what} failed.`, detail: message };
  }
  const detail = `${Code[error.code] ?? error.code}: ${error.rawMessage}`;
  // A fetch that never reached the server surfaces as an Unknown error caused by a TypeError.
  if (error.code === Code.Unknown && error.cause instanceof TypeError) {
    return { trouble: "unreachable", text: UNREACHABLE, detail };
  }
  switch (error.code) {
    case Code.Unauthenticated:
      return { trouble: "token", text: TOKEN_NEEDED, detail };
    case Code.Unavailable:
      return { trouble: "refused", text: `${what} failed: the server is busy or stopping. Try again in a moment.`, detail };
    case Code.NotFound:
      return { trouble: "refused", text: `${what} failed: what you chose no longer exists on the server.`, detail };
    case Code.FailedPrecondition:
      return { trouble: "refused", text: `${what} failed: that choice is not set up on this server.`, detail };
    case Code.Aborted:
      return { trouble: "refused", text: `${what} failed: someone else changed it meanwhile. Look again and retry.`, detail };
    case Code.ResourceExhausted:
      return { trouble: "refused", text: `${what} failed: the server is too busy. Try again in a moment.`, detail };
    case Code.InvalidArgument:
      return { trouble: "refused", text: `${what} failed: ${sentence(error.rawMessage)}`, detail };
    default:
      return { trouble: "refused", text: `${what} failed on the server.`, detail };
  }
}

/** The server's own words, when they are the only ones that say what to fix. */
function sentence(message: string): string {
  const text = message.replace(/_/g, " ");
  return text.charAt(0).toUpperCase() + text.slice(1) + (/[.!?]$/.test(text) ? "" : ".");
}

/** Why a backend, model or voice cannot be chosen, without the server's variable names. */
export function plainReason(reason: string): string {
  return /\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b/.test(reason) ? "not set up on this server" : reason;
}

/** How a call ended, from the WebSocket close and what the stream said before it. */
export interface Ending {
  text: string;
  /** A problem on the server's side, or with the connection: offer to call again. */
  failed: boolean;
  trouble?: Trouble;
}

/** `lastError` is the status code of the stream's last Error frame (0: none); `goingAway`: the
 * server said it was shutting down. Close codes: README "The web page". */
export function callEnding(code: number, lastError: number, goingAway: boolean, hungUp: boolean): Ending {
  if (code === 1008) return { text: `${TOKEN_NEEDED} The call could not start.`, failed: true, trouble: "token" };
  if (goingAway && (code === 1000 || code === 1001 || code === 4014)) {
    return { text: "The server shut down, so the call ended.", failed: true };
  }
  // Hung up here: the page closes the socket itself if the server is slow to (1005/1006 then).
  if (hungUp && [1000, 1005, 1006].includes(code)) return { text: "The call ended.", failed: false };
  if (code === 1000) return { text: "The agent ended the call.", failed: false };
  if (code === 1001) {
    return { text: "The server stopped during the call, so the call ended.", failed: true };
  }
  if (code === 1006) return { text: "The connection to the server was lost, so the call ended.", failed: true, trouble: "unreachable" };
  const status = code >= 4000 ? code - 4000 : lastError;
  switch (status) {
    case Code.Unavailable:
      return { text: "The server is starting up or shutting down. Try again in a moment.", failed: true };
    case Code.ResourceExhausted:
      return { text: "The server is taking as many calls as it can. Try again in a moment.", failed: true };
    case Code.NotFound:
      return { text: "The chosen voice, model or campaign no longer exists on the server. Choose another and call again.", failed: true };
    case Code.FailedPrecondition:
      return { text: "A choice for this call is not set up on this server. Choose another and call again.", failed: true };
    case Code.DeadlineExceeded:
      return { text: "The call was closed because nothing was heard from this page for a while.", failed: true };
    case Code.InvalidArgument:
      return { text: "The server did not accept this call's settings.", failed: true };
    default:
      return { text: "The call ended because of a problem on the server.", failed: true };
  }
}

/** An Error frame in a call that goes on. */
export function inCallError(code: number): string {
  switch (code) {
    case Code.ResourceExhausted:
      return "The agent is still answering: send your text when it has finished.";
    case Code.Unavailable:
      return "The agent could not finish that answer (a service it uses failed). The call goes on.";
    case Code.NotFound:
    case Code.FailedPrecondition:
    case Code.InvalidArgument:
      return "That model or voice cannot be used now; the call goes on with the previous one.";
    default:
      return "Something went wrong in the call; it goes on.";
  }
}
