// The "Calls" view: the call records (service Calls), newest first; a call's transcript with
// each turn's latency, and its recording (RECORD_CALLS=1) played from GetCallRecording.
// Its own entry point and its own section of the page (#calls-view): it builds its markup
// itself and shares nothing with the call view but the API clients.

import { Code, ConnectError } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { calls, TOKEN_EVENT } from "./api";
import { type Call, CallOutcome } from "./gen/voiceagent/v1/calls_pb";

const PAGE_SIZE = 20;

const root = document.getElementById("calls-view");
if (root) mount(root);

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  text = "",
  attributes: Record<string, string> = {},
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.textContent = text;
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

// How a call ended, in words (the enum names stay in the API).
const OUTCOMES: Record<number, string> = {
  [CallOutcome.CALL_OUTCOME_UNSPECIFIED]: "Still running",
  [CallOutcome.CALLER_HUNG_UP]: "Caller hung up",
  [CallOutcome.AGENT_ENDED]: "Agent ended the call",
  [CallOutcome.TRANSFERRED]: "Transferred",
  [CallOutcome.ERROR]: "Ended by an error",
};

function ms(value: number | undefined): string {
  return value ? `${Math.round(value)}` : "–";
}

function mount(section: HTMLElement): void {
  section.append(element("h2", "Calls", { id: "calls-title" }));
  const refresh = element("button", "Refresh", { type: "button", id: "calls-refresh" });
  const more = element("button", "Older calls", { type: "button", id: "calls-more", class: "secondary" });
  more.hidden = true;
  const status = element("p", "", { role: "status", id: "calls-status" });
  const table = element("table", "", { class: "cards" });
  table.innerHTML =
    "<thead><tr><th scope='col'>Started</th><th scope='col'>From</th><th scope='col'>To</th>" +
    "<th scope='col'>Campaign</th><th scope='col'>Seconds</th><th scope='col'>Outcome</th>" +
    "<th scope='col'><span class='visually-hidden'>Actions</span></th></tr></thead>";
  const rows = element("tbody", "", { id: "calls" });
  table.append(rows);
  const detail = element("div", "", { id: "call-detail" });
  const controls = element("div", "", { class: "row" });
  controls.append(refresh, more);
  section.append(controls, status, table, detail);
  section.setAttribute("aria-labelledby", "calls-title");

  let nextPage = "";
  const report = (what: string, err: unknown): void => {
    if (err instanceof ConnectError && err.code === Code.Unauthenticated) {
      status.textContent = "Enter the server's access token above to see its calls.";
    } else if (err instanceof ConnectError && err.code === Code.Unavailable) {
      status.textContent = `${what} failed: the server cannot be reached.`;
    } else {
      status.textContent = `${what} failed: ${err instanceof ConnectError ? err.rawMessage : String(err)}`;
    }
  };

  async function load(append: boolean): Promise<void> {
    const reply = await calls.listCalls({ pageSize: PAGE_SIZE, pageToken: append ? nextPage : "" });
    if (!append) rows.replaceChildren();
    for (const call of reply.calls) rows.append(row(call));
    nextPage = reply.nextPageToken;
    more.hidden = !nextPage;
    status.textContent = rows.children.length ? "" : "No calls yet.";
  }

  function row(call: Call): HTMLTableRowElement {
    const tr = element("tr", "", { "data-call": call.id });
    const started = call.startTime ? timestampDate(call.startTime).toLocaleString() : "";
    const outcome = OUTCOMES[call.outcome] ?? "";
    const cells: [string, string][] = [
      ["Started", started],
      ["From", call.sipCaller || call.transport],
      ["To", call.sipCalled],
      ["Campaign", call.campaignId],
      ["Seconds", call.durationSeconds.toFixed(1)],
      ["Outcome",
      call.outcome === CallOutcome.ERROR && call.statusMessage
        ? `${outcome}: ${call.statusMessage}`
        : outcome],
    ];
    for (const [label, text] of cells) tr.append(element("td", text, { "data-label": label }));
    const actions = element("td", "", { class: "row" });
    const open = element("button", "Open", { type: "button", class: "secondary" });
    open.addEventListener("click", () => show(call.id).catch((err) => report("Opening the call", err)));
    const remove = element("button", "Delete", { type: "button", class: "secondary" });
    remove.addEventListener("click", () =>
      calls
        .deleteCall({ id: call.id })
        .then(() => {
          tr.remove();
          if (detail.dataset.call === call.id) detail.replaceChildren();
        })
        .catch((err) => report("Deleting the call", err)),
    );
    actions.append(open, remove);
    tr.append(actions);
    return tr;
  }

  async function show(id: string): Promise<void> {
    const call = await calls.getCall({ id });
    detail.replaceChildren();
    detail.dataset.call = id;
    detail.append(element("h3", `Call ${id}`));
    detail.append(element("p", `${call.stt} · ${call.llm} · ${call.tts} · barge-ins: ${call.bargeIns}`));
    const transcript = element("ol", "", { class: "transcript", id: "call-transcript" });
    const latency = element("table", "", { class: "cards" });
    latency.innerHTML =
      "<caption>Milliseconds from the end of the caller's speech</caption><thead><tr>" +
      "<th scope='col'>Turn</th><th scope='col'>Final transcript</th><th scope='col'>First token</th>" +
      "<th scope='col'>First audio</th><th scope='col'>Voice to voice</th></tr></thead>";
    const latencyRows = element("tbody", "", { id: "call-latency" });
    latency.append(latencyRows);
    for (const turn of call.turns) {
      if (turn.userText) {
        const li = element("li", "", { class: "user" });
        li.append(element("span", "Caller", { class: "who" }), turn.userText);
        transcript.append(li);
      }
      const li = element("li", "", { class: "agent" });
      li.append(element("span", "Agent", { class: "who" }), turn.agentText + (turn.bargedIn ? " [interrupted]" : ""));
      transcript.append(li);
      const m = turn.metrics;
      if (m?.voiceToVoiceMs) {
        const tr = element("tr");
        const values: [string, string][] = [
          ["Turn", `${turn.turnId}`],
          ["Final transcript", ms(m.sttFinalMs)],
          ["First token", ms(m.llmFirstTokenMs)],
          ["First audio", ms(m.ttsFirstAudioMs)],
          ["Voice to voice", ms(m.voiceToVoiceMs)],
        ];
        for (const [label, text] of values) tr.append(element("td", text, { "data-label": label }));
        latencyRows.append(tr);
      }
    }
    detail.append(transcript, latency);
    if (call.hasRecording) {
      const parts: Uint8Array[] = [];
      for await (const chunk of calls.getCallRecording({ id })) parts.push(chunk.data);
      const audio = element("audio", "", { controls: "", id: "call-recording" });
      audio.src = URL.createObjectURL(new Blob(parts as BlobPart[], { type: "audio/wav" }));
      detail.append(element("h3", "Recording"), audio);
    }
  }

  refresh.addEventListener("click", () => load(false).catch((err) => report("Loading the calls", err)));
  more.addEventListener("click", () => load(true).catch((err) => report("Loading the calls", err)));
  load(false).catch((err) => report("Loading the calls", err));
  window.addEventListener(TOKEN_EVENT, () => load(false).catch((err) => report("Loading the calls", err)));
}
