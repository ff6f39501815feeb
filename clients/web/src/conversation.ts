// One call's section of the page: its conversation (the caller's words, the next line forming
// where it will land, the agent's answers, cut where the caller interrupted) and its own latency
// table and chart, drawn from the same rows so they always agree. A new call gets a new section;
// earlier ones stay as they were.

import { drawChart, type TurnPoint } from "./chart";
import { make } from "./dom";
import type { AgentText, TurnMetrics } from "./gen/voiceagent/v1/voice_agent_pb";

const SVG = "http://www.w3.org/2000/svg";

interface AgentLine {
  item: HTMLLIElement;
  heard: HTMLSpanElement;
  /** Everything the agent wrote for the turn (it may have been cut before saying all of it). */
  written: string;
  cut: boolean;
}

const COLUMNS: [keyof TurnMetrics | "turn", string][] = [
  ["turn", "Turn"],
  ["sttFinalMs", "Transcript ready"],
  ["llmFirstTokenMs", "First word written"],
  ["ttsFirstAudioMs", "First sound"],
  ["voiceToVoiceMs", "Voice to voice"],
  ["bargeInStopMs", "Stopped after interruption"],
];

export class Conversation {
  readonly element: HTMLElement;
  private readonly setup: HTMLParagraphElement;
  private readonly transcript: HTMLOListElement;
  private readonly latencyEmpty: HTMLParagraphElement;
  private readonly table: HTMLTableElement;
  private readonly rows: HTMLTableSectionElement;
  private readonly chart: SVGSVGElement;
  private interimLine: HTMLLIElement | null = null;
  private readonly agentLines = new Map<number, AgentLine>();
  private readonly turns: TurnMetrics[] = [];

  constructor(readonly number: number) {
    const id = `call-${number}`;
    this.element = make("article", "conversation");
    this.element.id = id;
    this.element.setAttribute("aria-labelledby", `${id}-title`);
    const title = make("h4", "", `Call ${number}`);
    title.id = `${id}-title`;
    this.setup = make("p", "setup", `Started ${new Date().toLocaleTimeString()}`);
    this.transcript = make("ol", "transcript");
    this.transcript.setAttribute("aria-label", `Conversation of call ${number}`);
    this.transcript.setAttribute("aria-live", "polite");
    this.transcript.tabIndex = 0; // it scrolls: keyboard users must reach it

    const latency = make("details", "latency");
    latency.open = true;
    latency.append(make("summary", "", "Latency per turn"));
    this.latencyEmpty = make("p", "empty", "The figures appear after the agent's first answer.");
    this.chart = document.createElementNS(SVG, "svg");
    this.chart.setAttribute("class", "chart");
    this.chart.setAttribute("role", "img");
    this.table = make("table", "cards");
    this.table.append(make("caption", "", "Milliseconds from the end of your speech"));
    const head = this.table.createTHead().insertRow();
    for (const [, label] of COLUMNS) head.append(Object.assign(make("th", "", label), { scope: "col" }));
    this.rows = this.table.createTBody();
    this.table.hidden = true;
    this.chart.toggleAttribute("hidden", true);
    latency.append(this.latencyEmpty, this.chart, this.table);

    this.element.append(title, this.setup, this.transcript, latency);
  }

  /** What the server chose for the call, in people's names. */
  describe(setup: string): void {
    this.setup.textContent = `${this.setup.textContent?.split(" · ")[0]} · ${setup}`;
  }

  /** What the caller is saying so far: shown where their line will be. */
  interim(text: string): void {
    if (!text) return;
    this.interimLine ??= this.append(this.line("user interim", "You", ""));
    (this.interimLine.querySelector(".text") as HTMLElement).textContent = text;
  }

  userSaid(text: string, typed = false): void {
    const line = this.interimLine;
    this.interimLine = null;
    if (!text) return line?.remove();
    if (line) {
      line.className = "user";
      (line.querySelector(".text") as HTMLElement).textContent = text;
    } else {
      this.append(this.line("user", typed ? "You (typed)" : "You", text));
    }
  }

  agentText(a: AgentText): void {
    const line = this.agentLine(a.turnId);
    if (!a.final) {
      line.written += a.delta;
      if (!line.cut) line.heard.textContent = line.written;
      return;
    }
    // The last final of a turn counts: after BARGE_IN it holds what the caller heard.
    if (line.cut) this.showCut(line, a.text);
    else line.heard.textContent = line.written = a.text;
  }

  /** A tool the agent called, or its result (issue 16's tools). */
  tool(who: string, text: string): void {
    this.append(this.line("tool", who, text));
  }

  /** The caller spoke over the agent: its line is marked cut (the heard text follows). */
  bargeIn(turnId: number): void {
    const line = this.agentLine(turnId);
    line.cut = true;
    this.showCut(line, line.heard.textContent ?? "");
  }

  metrics(m: TurnMetrics): void {
    const index = this.turns.findIndex((t) => t.turnId === m.turnId);
    if (index >= 0) this.turns[index] = m;
    else this.turns.push(m);
    this.drawLatency();
  }

  /** The call is over: say how, as its last line. */
  end(text: string): void {
    this.interimLine?.remove();
    this.interimLine = null;
    this.append(make("li", "ending", text));
  }

  private drawLatency(): void {
    const points: TurnPoint[] = [];
    this.rows.replaceChildren();
    for (const m of this.turns) {
      const label = m.turnId === 0 ? "greeting" : `${m.turnId}${m.fromText ? " (typed)" : ""}`;
      const row = this.rows.insertRow();
      for (const [key, heading] of COLUMNS) {
        const value = key === "turn" ? label : ms(m[key] as number | undefined);
        const cell = make("td", "", value);
        cell.dataset.label = heading;
        row.append(cell);
      }
      points.push({ label, voiceToVoiceMs: m.voiceToVoiceMs });
    }
    drawChart(this.chart, points);
    const none = this.turns.length === 0;
    this.latencyEmpty.hidden = !none;
    this.table.hidden = none;
    this.chart.toggleAttribute("hidden", none);
  }

  private agentLine(turnId: number): AgentLine {
    let line = this.agentLines.get(turnId);
    if (!line) {
      const item = this.line("agent", "Agent", "");
      line = { item, heard: item.querySelector(".text") as HTMLSpanElement, written: "", cut: false };
      this.agentLines.set(turnId, line);
      this.append(item);
    }
    return line;
  }

  private showCut(line: AgentLine, heard: string): void {
    line.heard.textContent = heard;
    line.item.classList.add("interrupted");
    line.item.querySelectorAll(".cut, del").forEach((node) => node.remove());
    const mark = make("span", "cut", heard ? "cut off" : "cut off before speaking");
    const parts: Node[] = [mark];
    const rest = line.written.startsWith(heard) ? line.written.slice(heard.length).trim() : "";
    if (rest) {
      const unheard = make("del", "", rest);
      unheard.prepend(make("span", "visually-hidden", "not heard: "));
      parts.push(unheard);
    }
    line.heard.after(...parts);
  }

  private line(kind: string, who: string, text: string): HTMLLIElement {
    const item = make("li", kind);
    item.append(make("span", "who", `${who}:`), make("span", "text", text));
    return item;
  }

  /** New lines go before the caller's forming line, which stays last. */
  private append(item: HTMLLIElement): HTMLLIElement {
    if (this.interimLine && this.interimLine !== item) this.interimLine.before(item);
    else this.transcript.append(item);
    this.transcript.scrollTop = this.transcript.scrollHeight;
    return item;
  }
}

function ms(value: number | undefined): string {
  return value ? `${Math.round(value)}` : "–";
}
