// The page: AI options, campaigns, and a call from the microphone with live transcripts,
// events and latency.

import { ConnectError } from "@connectrpc/connect";
import { create, fromJson, type JsonValue, toJson } from "@bufbuild/protobuf";
import { FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import { campaigns, setToken, token, voiceAgent } from "./api";
import { Call, OUTPUT_RATE } from "./call";
import { drawChart, type TurnPoint } from "./chart";
import { type Campaign, CampaignSchema } from "./gen/voiceagent/v1/campaigns_pb";
import {
  AudioEncoding,
  type ConverseResponse,
  EventType,
  type Model,
  type TurnMetrics,
  type Voice,
} from "./gen/voiceagent/v1/voice_agent_pb";
import { Playback } from "./playback";

const STT_BACKENDS = ["whisper", "deepgram-flux"];
const CAMPAIGN_FIELDS = [
  "name", "persona", "greeting", "llm_model", "tts_voice", "language", "tools", "builtin_tools",
];

function byId<T extends HTMLElement>(id: string): T {
  const node = document.getElementById(id);
  if (!node) throw new Error(`#${id} is missing from the page`);
  return node as T;
}

const ui = {
  status: byId<HTMLParagraphElement>("status"),
  stt: byId<HTMLSelectElement>("stt"),
  model: byId<HTMLSelectElement>("model"),
  voice: byId<HTMLSelectElement>("voice"),
  campaign: byId<HTMLSelectElement>("campaign"),
  previewText: byId<HTMLInputElement>("preview-text"),
  preview: byId<HTMLButtonElement>("preview"),
  start: byId<HTMLButtonElement>("start"),
  hangup: byId<HTMLButtonElement>("hangup"),
  apply: byId<HTMLButtonElement>("apply"),
  received: byId<HTMLOutputElement>("received"),
  rawAudio: byId<HTMLInputElement>("raw-audio"),
  silenceTurns: byId<HTMLInputElement>("silence-turns"),
  sayForm: byId<HTMLFormElement>("say-form"),
  say: byId<HTMLInputElement>("say"),
  saySend: byId<HTMLButtonElement>("say-send"),
  interim: byId<HTMLParagraphElement>("interim"),
  transcript: byId<HTMLOListElement>("transcript"),
  events: byId<HTMLUListElement>("events"),
  chart: document.getElementById("chart") as unknown as SVGSVGElement,
  metrics: byId<HTMLTableSectionElement>("metrics"),
  campaigns: byId<HTMLTableSectionElement>("campaigns"),
  campaignForm: byId<HTMLFormElement>("campaign-form"),
  campaignFormTitle: byId<HTMLHeadingElement>("campaign-form-title"),
  campaignId: byId<HTMLInputElement>("campaign-id"),
  campaignName: byId<HTMLInputElement>("campaign-name"),
  campaignPersona: byId<HTMLTextAreaElement>("campaign-persona"),
  campaignGreeting: byId<HTMLInputElement>("campaign-greeting"),
  campaignModel: byId<HTMLSelectElement>("campaign-model"),
  campaignVoice: byId<HTMLSelectElement>("campaign-voice"),
  campaignLanguage: byId<HTMLInputElement>("campaign-language"),
  campaignTools: byId<HTMLTextAreaElement>("campaign-tools"),
  campaignSave: byId<HTMLButtonElement>("campaign-save"),
  tokenForm: byId<HTMLFormElement>("token-form"),
  token: byId<HTMLInputElement>("token"),
};

function say(message: string, isError = false): void {
  ui.status.textContent = message;
  ui.status.classList.toggle("error", isError);
}

function describe(error: unknown): string {
  if (error instanceof ConnectError) return `${error.code ? codeName(error.code) : "error"}: ${error.rawMessage}`;
  return error instanceof Error ? error.message : String(error);
}

function codeName(code: number): string {
  // Connect codes are gRPC codes: name them as the server's messages do.
  const names = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"];
  return names[code] ?? `code ${code}`;
}

async function attempt(what: string, action: () => Promise<void>): Promise<void> {
  try {
    await action();
  } catch (error) {
    say(`${what} failed: ${describe(error)}`, true);
  }
}

// --- AI options ---------------------------------------------------------------------------

function option(value: string, label: string, disabled = false): HTMLOptionElement {
  const node = new Option(label, value);
  node.disabled = disabled;
  return node;
}

/** Options grouped by backend; unavailable ones stay listed, disabled, with their reason. */
function fillGrouped(
  select: HTMLSelectElement,
  items: (Model | Voice)[],
  label: (item: Model | Voice) => string,
  first: HTMLOptionElement,
): void {
  const previous = select.value;
  select.replaceChildren(first);
  const groups = new Map<string, HTMLOptGroupElement>();
  for (const item of items) {
    let group = groups.get(item.backend);
    if (!group) {
      group = document.createElement("optgroup");
      group.label = item.backend;
      groups.set(item.backend, group);
      select.append(group);
    }
    const text = item.available ? label(item) : `${label(item)} (unavailable: ${item.unavailableReason})`;
    group.append(option(item.id, text, !item.available));
  }
  if ([...select.options].some((o) => o.value === previous && !o.disabled)) select.value = previous;
}

async function loadOptions(): Promise<void> {
  const [models, voices, config] = await Promise.all([
    voiceAgent.listModels({}),
    voiceAgent.listVoices({}),
    voiceAgent.getConfig({}),
  ]);
  const modelLabel = (m: Model | Voice) => m.id + ("loaded" in m && m.loaded ? " (loaded)" : "");
  const voiceLabel = (v: Model | Voice) =>
    "name" in v ? `${v.name} — ${v.language}${v.gender ? `, ${v.gender}` : ""}` : v.id;
  fillGrouped(ui.model, models.models, modelLabel, option("", `server default (${config.llmModel})`));
  fillGrouped(ui.voice, voices.voices, voiceLabel, option("", `server default (${config.ttsVoice})`));
  fillGrouped(ui.campaignModel, models.models, modelLabel, option("", "server default"));
  fillGrouped(ui.campaignVoice, voices.voices, voiceLabel, option("", "server default"));
  ui.stt.replaceChildren(
    option("", `server default (${config.stt})`),
    ...STT_BACKENDS.map((name) => option(name, name)),
  );
}

let preview: Playback | null = null;

async function previewVoice(): Promise<void> {
  ui.preview.disabled = true;
  try {
    const response = await voiceAgent.previewVoice({
      voice: ui.voice.value,
      text: ui.previewText.value,
      outputFormat: { encoding: AudioEncoding.LINEAR16, sampleRateHertz: OUTPUT_RATE },
    });
    preview?.flush();
    preview ??= new Playback(OUTPUT_RATE);
    await preview.resume();
    preview.enqueue(response.audio);
    say(`Playing a preview of ${ui.voice.value || "the default voice"}.`);
  } finally {
    ui.preview.disabled = false;
  }
}

// --- campaigns ------------------------------------------------------------------------------

let campaignList: Campaign[] = [];

async function loadCampaigns(): Promise<void> {
  campaignList = [];
  let pageToken = "";
  do {
    const page = await campaigns.listCampaigns({ pageSize: 100, pageToken });
    campaignList.push(...page.campaigns);
    pageToken = page.nextPageToken;
  } while (pageToken);
  ui.campaigns.replaceChildren(
    ...campaignList.map((c) => {
      const row = ui.campaigns.insertRow();
      for (const text of [c.name, c.llmModel || "default", c.ttsVoice || "default", c.language || "en"]) {
        row.insertCell().textContent = text;
      }
      const actions = row.insertCell();
      const edit = button("Edit", `Edit campaign ${c.name}`, () => editCampaign(c));
      const remove = button("Delete", `Delete campaign ${c.name}`, () =>
        attempt("Deleting the campaign", () => deleteCampaign(c)),
      );
      actions.append(edit, " ", remove);
      return row;
    }),
  );
  const selected = ui.campaign.value;
  ui.campaign.replaceChildren(option("", "none"), ...campaignList.map((c) => option(c.id, c.name)));
  if (campaignList.some((c) => c.id === selected)) ui.campaign.value = selected;
}

function button(text: string, label: string, onClick: () => void): HTMLButtonElement {
  const node = document.createElement("button");
  node.type = "button";
  node.className = "secondary";
  node.textContent = text;
  node.setAttribute("aria-label", label);
  node.addEventListener("click", onClick);
  return node;
}

function editCampaign(c: Campaign): void {
  ui.campaignId.value = c.id;
  ui.campaignName.value = c.name;
  ui.campaignPersona.value = c.persona;
  ui.campaignGreeting.value = c.greeting;
  ui.campaignModel.value = c.llmModel;
  ui.campaignVoice.value = c.ttsVoice;
  ui.campaignLanguage.value = c.language;
  // Tools as the proto's JSON; webhook header values come back empty (write-only) and an empty
  // value sent back keeps the stored one.
  const { tools, builtinTools } = toJson(CampaignSchema, c) as { tools?: JsonValue; builtinTools?: JsonValue };
  ui.campaignTools.value = tools || builtinTools ? JSON.stringify({ tools, builtinTools }, null, 2) : "";
  ui.campaignFormTitle.textContent = `Edit campaign ${c.name}`;
  ui.campaignSave.textContent = "Save changes";
  ui.campaignName.focus();
}

function resetCampaignForm(): void {
  ui.campaignId.value = "";
  ui.campaignFormTitle.textContent = "New campaign";
  ui.campaignSave.textContent = "Create campaign";
}

async function saveCampaign(): Promise<void> {
  const fields = {
    name: ui.campaignName.value.trim(),
    persona: ui.campaignPersona.value,
    greeting: ui.campaignGreeting.value,
    llmModel: ui.campaignModel.value,
    ttsVoice: ui.campaignVoice.value,
    language: ui.campaignLanguage.value.trim(),
    ...campaignTools(),
  };
  const id = ui.campaignId.value;
  if (id) {
    const current = campaignList.find((c) => c.id === id);
    await campaigns.updateCampaign({
      campaign: create(CampaignSchema, { ...fields, id, etag: current?.etag ?? "" }),
      updateMask: create(FieldMaskSchema, { paths: CAMPAIGN_FIELDS }),
    });
    say(`Saved campaign ${fields.name}.`);
  } else {
    const created = await campaigns.createCampaign({ campaign: fields });
    say(`Created campaign ${created.name}.`);
  }
  ui.campaignForm.reset();
  resetCampaignForm();
  await loadCampaigns();
}

/** The tools textarea: `{"tools": [...], "builtinTools": {...}}` in the proto's JSON. */
function campaignTools(): Pick<Campaign, "tools" | "builtinTools"> {
  const text = ui.campaignTools.value.trim();
  if (!text) return { tools: [], builtinTools: undefined };
  let json: JsonValue;
  try {
    json = JSON.parse(text) as JsonValue;
  } catch (err) {
    throw new Error(`Tools are not valid JSON: ${(err as Error).message}`);
  }
  const parsed = fromJson(CampaignSchema, json);
  return { tools: parsed.tools, builtinTools: parsed.builtinTools };
}

async function deleteCampaign(c: Campaign): Promise<void> {
  if (!confirm(`Delete campaign ${c.name}?`)) return;
  await campaigns.deleteCampaign({ id: c.id });
  say(`Deleted campaign ${c.name}.`);
  await loadCampaigns();
}

// --- the call -------------------------------------------------------------------------------

let call: Call | null = null;
let receivedTimer = 0;
const agentTurns = new Map<number, HTMLLIElement>();
const points: TurnPoint[] = [];

function line(kind: "user" | "agent" | "tool", who: string, text: string): HTMLLIElement {
  const item = document.createElement("li");
  item.className = kind;
  const name = document.createElement("span");
  name.className = "who";
  name.textContent = `${who}:`;
  const words = document.createElement("span");
  words.className = "text";
  words.textContent = text;
  item.append(name, words);
  ui.transcript.append(item);
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
  return item;
}

function logEvent(text: string): void {
  const item = document.createElement("li");
  item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  ui.events.append(item);
  ui.events.scrollTop = ui.events.scrollHeight;
}

function showMetrics(m: TurnMetrics): void {
  const id = `turn-${m.turnId}`;
  const row = (document.getElementById(id) as HTMLTableRowElement | null) ?? ui.metrics.insertRow();
  row.id = id;
  const ms = (value: number | undefined) => (value ? `${Math.round(value)}` : "");
  const cells = [`${m.turnId}${m.fromText ? " (typed)" : ""}`, ms(m.sttFinalMs), ms(m.llmFirstTokenMs),
    ms(m.ttsFirstAudioMs), ms(m.voiceToVoiceMs), ms(m.bargeInStopMs)];
  row.replaceChildren(...cells.map((text) => Object.assign(document.createElement("td"), { textContent: text })));
  if (m.voiceToVoiceMs > 0 && !points.some((p) => p.turnId === m.turnId)) {
    points.push({ turnId: m.turnId, voiceToVoiceMs: m.voiceToVoiceMs });
    drawChart(ui.chart, points);
  }
}

function onResponse(response: ConverseResponse): void {
  const message = response.response;
  switch (message.case) {
    case "sessionStarted": {
      const c = message.value.config;
      say(`In a call (session ${message.value.sessionId}): ${c?.stt} / ${c?.llmModel} / ${c?.ttsVoice}. Speak when you are ready.`);
      logEvent(`SESSION_STARTED ${message.value.sessionId}`);
      break;
    }
    case "transcript": {
      const t = message.value;
      if (t.isFinal) {
        ui.interim.textContent = "";
        if (t.text) line("user", "You", t.text);
      } else {
        ui.interim.textContent = t.text;
      }
      break;
    }
    case "agentText": {
      const a = message.value;
      let item = agentTurns.get(a.turnId);
      if (!item) {
        item = line("agent", "Agent", "");
        agentTurns.set(a.turnId, item);
      }
      const words = item.querySelector(".text") as HTMLSpanElement;
      words.textContent = a.final ? a.text : words.textContent + a.delta;
      break;
    }
    case "toolCall":
      line("tool", "Tool call", `${message.value.name}(${message.value.argumentsJson})`);
      break;
    case "toolResult": {
      const r = message.value;
      line("tool", "Tool result", `${r.name}: ${r.error ? `error: ${r.error}` : r.resultJson}`);
      break;
    }
    case "event":
      logEvent(`${EventType[message.value.type]}${message.value.message ? `: ${message.value.message}` : ""}`);
      break;
    case "metrics":
      showMetrics(message.value);
      break;
    case "error":
      say(`The server reported: ${codeName(message.value.code)}: ${message.value.message}`, true);
      break;
    default:
      break;
  }
}

function setInCall(inCall: boolean): void {
  ui.start.disabled = inCall;
  ui.rawAudio.disabled = inCall;
  ui.silenceTurns.disabled = inCall;
  ui.hangup.disabled = !inCall;
  ui.apply.disabled = !inCall;
  ui.say.disabled = !inCall;
  ui.saySend.disabled = !inCall;
}

async function startCall(): Promise<void> {
  setInCall(true);
  agentTurns.clear();
  say("Connecting…");
  try {
    call = await Call.start(
      {
        stt: ui.stt.value,
        llmModel: ui.model.value,
        ttsVoice: ui.voice.value,
        campaignId: ui.campaign.value,
        voiceProcessing: !ui.rawAudio.checked,
        semanticTurns: !ui.silenceTurns.checked,
      },
      token(),
      {
        onResponse,
        onClosed(code, reason) {
          window.clearInterval(receivedTimer);
          setInCall(false);
          call = null;
          logEvent(`CLOSED ${code}${reason ? `: ${reason}` : ""}`);
          if (code === 1000) say("The call ended.");
          else if (!ui.status.classList.contains("error")) say(`The call ended: ${reason || `close code ${code}`}`, true);
        },
      },
    );
    receivedTimer = window.setInterval(() => {
      if (call) ui.received.value = `${Math.round(call.receivedAudioMs)}`;
    }, 200);
  } catch (error) {
    setInCall(false);
    call?.hangup();
    call = null;
    throw error;
  }
}

// --- wiring ---------------------------------------------------------------------------------

ui.token.value = token();
ui.tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  setToken(ui.token.value.trim());
  void attempt("Loading", () => Promise.all([loadOptions(), loadCampaigns()]).then(() => say("Token saved.")));
});
ui.preview.addEventListener("click", () => void attempt("The preview", previewVoice));
ui.campaignForm.addEventListener("submit", (event) => {
  event.preventDefault();
  void attempt("Saving the campaign", saveCampaign);
});
ui.campaignForm.addEventListener("reset", resetCampaignForm);
ui.start.addEventListener("click", () => void attempt("Starting the call", startCall));
ui.hangup.addEventListener("click", () => call?.hangup());
ui.sayForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.say.value.trim();
  if (!call || !text) return;
  call.sayText(text);
  line("user", "You (typed)", text);
  ui.say.value = "";
});
ui.apply.addEventListener("click", () => {
  if (!ui.model.value && !ui.voice.value) {
    say("Choose a model or a voice above first, then apply it.", true);
    return;
  }
  call?.update(ui.model.value, ui.voice.value);
  logEvent(`asked to switch: model ${ui.model.value || "unchanged"}, voice ${ui.voice.value || "unchanged"}`);
});
drawChart(ui.chart, points);
void attempt("Loading the options", async () => {
  await Promise.all([loadOptions(), loadCampaigns()]);
  document.body.dataset.ready = "true";
});
