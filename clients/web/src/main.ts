// The page: wires the agent's options, devices, campaigns, the server's health, the token prompt
// and the call together. Each part lives in its own module; this one decides what is enabled
// when, and where each message goes.

import { token } from "./api";
import { Call, CouldNotConnect } from "./call";
import { type CallState, CallStateMachine, STATE_WORDS } from "./call-state";
import { CampaignsView } from "./campaigns";
import { Connection } from "./connection";
import { Conversation } from "./conversation";
import { logEvent } from "./developer-log";
import { DevicePickers } from "./devices";
import { byId, showMessage } from "./dom";
import { type ConverseResponse, EventType, TurnEvent } from "./gen/voiceagent/v1/voice_agent_pb";
import { callEnding, inCallError, type Problem, rpcProblem, TOKEN_NEEDED } from "./messages";
import { AgentOptions } from "./options";
import { VoicePreview } from "./preview";
import { TokenPrompt } from "./token-prompt";

const ui = {
  start: byId<HTMLButtonElement>("start"),
  mute: byId<HTMLButtonElement>("mute"),
  hangup: byId<HTMLButtonElement>("hangup"),
  apply: byId<HTMLButtonElement>("apply"),
  state: byId<HTMLParagraphElement>("call-state"),
  level: byId<HTMLMeterElement>("mic-level"),
  message: byId<HTMLDivElement>("call-message"),
  messageText: byId<HTMLSpanElement>("call-message-text"),
  callAgain: byId<HTMLButtonElement>("call-again"),
  rawAudio: byId<HTMLInputElement>("raw-audio"),
  silenceTurns: byId<HTMLInputElement>("silence-turns"),
  sayForm: byId<HTMLFormElement>("say-form"),
  say: byId<HTMLInputElement>("say"),
  saySend: byId<HTMLButtonElement>("say-send"),
  previewText: byId<HTMLInputElement>("preview-text"),
  preview: byId<HTMLButtonElement>("preview"),
  conversations: byId<HTMLDivElement>("conversations"),
  conversationsEmpty: byId<HTMLParagraphElement>("conversations-empty"),
  clear: byId<HTMLButtonElement>("clear"),
};

const options = new AgentOptions();
const connection = new Connection(loadEverything);
const tokenPrompt = new TokenPrompt(loadEverything);
const campaignsView = new CampaignsView((id) => options.voiceName(id), onProblem);
const devices = new DevicePickers(
  (id) => void call?.switchMicrophone(id, !ui.rawAudio.checked).catch((e) => microphoneFailed(e)),
  (id) => void call?.setSpeaker(id),
);
new VoicePreview(
  () => ({ id: options.voice.value, name: options.voice.selectedOptions[0]?.text.replace(/^Server default: /, "") ?? "" }),
  () => devices.speaker.value,
  onProblem,
);

/** The page has loaded the server's options: it can be used (else: unreachable, or no token). */
let usable = false;
let call: Call | null = null;
let conversation: Conversation | null = null;
let stateMachine: CallStateMachine | null = null;
let meterFrame = 0;
let callCount = 0;

// --- loading, and what to do when the server cannot be used --------------------------------

async function loadEverything(): Promise<void> {
  try {
    await Promise.all([options.load(), campaignsView.load()]);
    usable = true;
    tokenPrompt.accepted();
    connection.reached();
  } catch (error) {
    usable = false;
    onProblem(rpcProblem(error, "Loading the agent's options"));
  } finally {
    refreshControls();
    document.body.dataset.ready = "true";
  }
}

/** A request failed: open the token prompt, show the unreachable banner, or leave the message
 * where the caller put it. */
function onProblem(problem: Problem): void {
  logEvent(problem.detail);
  if (problem.trouble === "token") {
    usable = false;
    tokenPrompt.open();
  } else if (problem.trouble === "unreachable") {
    connection.unreachable(problem.text);
  }
  refreshControls();
}

/** What can be used now: nothing that needs the server without it; call controls in a call. */
function refreshControls(): void {
  const inCall = call !== null;
  for (const node of [options.stt, options.model, options.voice, campaignsView.picker, ui.previewText, ui.preview,
    ...campaignsView.controls]) {
    node.disabled = !usable;
  }
  ui.start.disabled = !usable || inCall;
  ui.start.title = usable ? "" : tokenPrompt.isOpen ? TOKEN_NEEDED : "The server cannot be used right now.";
  ui.rawAudio.disabled = inCall;
  ui.silenceTurns.disabled = inCall;
  for (const node of [ui.hangup, ui.mute, ui.apply, ui.say, ui.saySend]) node.disabled = !inCall;
  ui.clear.hidden = !ui.conversations.querySelector(".conversation.finished");
  ui.conversationsEmpty.hidden = ui.conversations.childElementCount > 0;
}

// --- the call --------------------------------------------------------------------------------

function showState(state: CallState | "idle"): void {
  ui.state.dataset.state = state;
  ui.state.textContent = STATE_WORDS[state];
  conversation?.element.setAttribute("data-state", state);
  logEvent(`state: ${state}`);
}

function callMessage(text: string, tone: "" | "error" = "", offerRetry = false): void {
  showMessage(ui.messageText, text);
  ui.message.classList.toggle("error", tone === "error");
  ui.message.hidden = !text;
  ui.callAgain.hidden = !offerRetry;
}

let lastErrorCode = 0;
let goingAway = false;

function onResponse(response: ConverseResponse): void {
  stateMachine?.response(response);
  const message = response.response;
  switch (message.case) {
    case "sessionStarted": {
      const c = message.value.config;
      logEvent(`SESSION_STARTED ${message.value.sessionId}: ${c?.stt} / ${c?.llmModel} / ${c?.ttsVoice}`);
      conversation?.describe(options.describeSetup(c?.stt ?? "", c?.llmModel ?? "", c?.ttsVoice ?? ""));
      void devices.refresh(); // the microphone is allowed now: devices have names
      break;
    }
    case "transcript": {
      const t = message.value;
      if (t.isFinal) conversation?.userSaid(t.text);
      else if (t.event !== TurnEvent.TURN_RESUMED) conversation?.interim(t.text);
      if (t.isFinal || t.event === TurnEvent.START_OF_TURN || t.event === TurnEvent.EAGER_END_OF_TURN) {
        logEvent(`${TurnEvent[t.event]} turn ${t.turnIndex}: ${t.text}`);
      }
      break;
    }
    case "agentText":
      conversation?.agentText(message.value);
      if (message.value.final) logEvent(`AGENT_TEXT final turn ${message.value.turnId}: ${message.value.text}`);
      break;
    case "toolCall":
      conversation?.tool("Tool call", `${message.value.name}(${message.value.argumentsJson})`);
      break;
    case "toolResult": {
      const r = message.value;
      conversation?.tool("Tool result", `${r.name}: ${r.error ? `error: ${r.error}` : r.resultJson}`);
      break;
    }
    case "event": {
      const e = message.value;
      logEvent(`${EventType[e.type]} turn ${e.turnId}${e.message ? `: ${e.message}` : ""}`);
      if (e.type === EventType.BARGE_IN) conversation?.bargeIn(e.turnId);
      if (e.type === EventType.GOING_AWAY) {
        goingAway = true;
        callMessage("The server is shutting down: the call ends after the agent's current answer.", "error");
      }
      if (e.type === EventType.CONFIG_APPLIED) callMessage("The chosen model and voice answer from the next turn.");
      break;
    }
    case "metrics":
      conversation?.metrics(message.value);
      break;
    case "error":
      lastErrorCode = message.value.code;
      logEvent(`ERROR ${message.value.code}: ${message.value.message}`);
      callMessage(inCallError(message.value.code), "error");
      break;
    default:
      break;
  }
}

function onClosed(code: number, reason: string, hungUp: boolean): void {
  logEvent(`CLOSED ${code}${reason ? `: ${reason}` : ""}`);
  const ending = callEnding(code, lastErrorCode, goingAway, hungUp);
  stateMachine?.closed();
  conversation?.end(ending.text);
  conversation?.element.classList.add("finished");
  endCall();
  callMessage(ending.text, ending.failed ? "error" : "", ending.failed && ending.trouble !== "token");
  if (ending.trouble === "token") onProblem({ trouble: "token", text: ending.text, detail: `close ${code}` });
  if (ending.trouble === "unreachable") connection.start(); // check now, not in 5 s
}

function endCall(): void {
  window.cancelAnimationFrame(meterFrame);
  ui.level.value = 0;
  call = null;
  stateMachine = null;
  setMuted(false);
  refreshControls();
}

function microphoneFailed(error: unknown): void {
  logEvent(`microphone: ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`);
  const denied = error instanceof DOMException && error.name === "NotAllowedError";
  callMessage(
    denied
      ? "The browser did not allow the microphone. Allow it for this page (the icon in the address bar), then call again."
      : "The microphone could not be opened. Check that one is connected, or choose another under Audio.",
    "error",
    true,
  );
}

function meter(): void {
  if (!call) return;
  ui.level.value = call.microphoneLevel();
  meterFrame = window.requestAnimationFrame(meter);
}

async function startCall(): Promise<void> {
  callCount += 1;
  conversation = new Conversation(callCount);
  ui.conversations.prepend(conversation.element);
  lastErrorCode = 0;
  goingAway = false;
  callMessage("");
  stateMachine = new CallStateMachine(showState);
  showState("connecting");
  ui.start.disabled = true;
  refreshControls();
  const machine = stateMachine;
  let closed = false; // the server may end the call before Call.start returns (a refused token)
  try {
    const started = await Call.start(
      {
        stt: options.stt.value,
        llmModel: options.model.value,
        ttsVoice: options.voice.value,
        campaignId: campaignsView.picker.value,
        voiceProcessing: !ui.rawAudio.checked,
        semanticTurns: !ui.silenceTurns.checked,
        microphoneId: devices.microphone.value,
        speakerId: devices.speaker.value,
      },
      token(),
      {
        onResponse,
        onPlaying: (playing) => machine.speaker(playing),
        onClosed(code, reason, hungUp) {
          closed = true;
          onClosed(code, reason, hungUp);
        },
      },
    );
    if (!closed) {
      call = started;
      meterFrame = window.requestAnimationFrame(meter);
    }
  } catch (error) {
    if (closed) return; // the call ended while the microphone opened: its ending is the news
    if (error instanceof CouldNotConnect) {
      logEvent(`WebSocket: ${error.message}`);
      onClosed(1006, "", false);
      return;
    }
    microphoneFailed(error);
  }
  refreshControls();
}

function setMuted(muted: boolean): void {
  call?.setMuted(muted);
  ui.mute.setAttribute("aria-pressed", String(muted));
  ui.mute.textContent = muted ? "Unmute" : "Mute";
}

// --- wiring ----------------------------------------------------------------------------------

ui.start.addEventListener("click", () => void startCall());
ui.callAgain.addEventListener("click", () => void startCall());
ui.hangup.addEventListener("click", () => call?.hangup());
ui.mute.addEventListener("click", () => setMuted(ui.mute.getAttribute("aria-pressed") !== "true"));
ui.sayForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.say.value.trim();
  if (!call || !text) return;
  call.sayText(text);
  conversation?.userSaid(text, true);
  stateMachine?.typed();
  ui.say.value = "";
});
ui.apply.addEventListener("click", () => {
  if (!options.model.value && !options.voice.value) {
    callMessage("Choose a language model or a voice under Agent first, then use it.", "error");
    return;
  }
  call?.update(options.model.value, options.voice.value);
  logEvent(`asked to switch: model ${options.model.value || "unchanged"}, voice ${options.voice.value || "unchanged"}`);
});
ui.clear.addEventListener("click", () => {
  ui.conversations.querySelectorAll(".conversation.finished").forEach((node) => node.remove());
  refreshControls();
});

showState("idle");
refreshControls();
connection.start();
void devices.refresh();
void loadEverything();
