// The generated clients for the unary and server-streaming RPCs, over the Connect protocol on
// the page's own origin (the server's $HTTP_PORT).

import { createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { Calls } from "./gen/voiceagent/v1/calls_pb";
import { Campaigns } from "./gen/voiceagent/v1/campaigns_pb";
import { VoiceAgent } from "./gen/voiceagent/v1/voice_agent_pb";

const TOKEN_KEY = "voice-agent-token";

/** VOICE_AGENT_TOKEN, when the server wants one: kept in this browser's local storage. */
export function token(): string {
  return localStorage.getItem(TOKEN_KEY) ?? "";
}

/** Dispatched on `window` when the token changes: views that load on their own load again. */
export const TOKEN_EVENT = "voice-agent-token";

export function setToken(value: string): void {
  if (value) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
  window.dispatchEvent(new Event(TOKEN_EVENT));
}

const bearer: Interceptor = (next) => (request) => {
  const value = token();
  if (value) request.header.set("authorization", `Bearer ${value}`);
  return next(request);
};

const transport = createConnectTransport({
  baseUrl: location.origin,
  useBinaryFormat: true,
  interceptors: [bearer],
});

export const voiceAgent = createClient(VoiceAgent, transport);
export const campaigns = createClient(Campaigns, transport);
export const calls = createClient(Calls, transport);
