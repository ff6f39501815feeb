// The agent's options: speech recognition, language model and voice pickers (every backend the
// server lists, grouped under its display name; unavailable ones greyed out with a plain reason),
// and the names people see for what the server calls by id.

import { voiceAgent } from "./api";
import { logEvent } from "./developer-log";
import { byId } from "./dom";
import {
  type Backend,
  BackendKind,
  type Config,
  type Model,
  type Voice,
} from "./gen/voiceagent/v1/voice_agent_pb";
import { plainReason } from "./messages";

interface Choice {
  id: string;
  label: string;
  group: string;
  available: boolean;
  reason: string;
}

export class AgentOptions {
  readonly stt = byId<HTMLSelectElement>("stt");
  readonly model = byId<HTMLSelectElement>("model");
  readonly voice = byId<HTMLSelectElement>("voice");
  private readonly note = byId<HTMLParagraphElement>("options-note");
  private readonly campaignModel = byId<HTMLSelectElement>("campaign-model");
  private readonly campaignVoice = byId<HTMLSelectElement>("campaign-voice");
  private backends: Backend[] = [];
  private voices: Voice[] = [];
  private config: Config | null = null;

  async load(): Promise<void> {
    const [backends, models, voices, config] = await Promise.all([
      voiceAgent.listBackends({}),
      voiceAgent.listModels({}),
      voiceAgent.listVoices({}),
      voiceAgent.getConfig({}),
    ]);
    this.backends = backends.backends;
    this.voices = voices.voices;
    this.config = config;
    for (const b of this.backends) {
      if (!b.available) logEvent(`backend ${b.name} unavailable: ${b.unavailableReason}`);
    }
    const sttChoices = this.backends
      .filter((b) => b.kind === BackendKind.STT)
      .map((b) => ({ id: b.name, label: b.displayName, group: "", available: b.available, reason: b.unavailableReason }));
    const modelChoices = models.models.map((m: Model) => ({
      id: m.id,
      label: m.id,
      group: this.backendName(BackendKind.LLM, m.backend),
      available: m.available,
      reason: m.unavailableReason,
    }));
    const voiceChoices = voices.voices.map((v) => ({
      id: v.id,
      label: voiceLabel(v),
      group: this.backendName(BackendKind.TTS, v.backend),
      available: v.available,
      reason: v.unavailableReason,
    }));
    fill(this.stt, sttChoices, `Server default: ${this.backendName(BackendKind.STT, config.stt)}`);
    fill(this.model, modelChoices, `Server default: ${config.llmModel}`);
    fill(this.voice, voiceChoices, `Server default: ${this.voiceName(config.ttsVoice)}`);
    fill(this.campaignModel, modelChoices, "Server default");
    fill(this.campaignVoice, voiceChoices, "Server default");
    this.note.hidden = ![...sttChoices, ...modelChoices, ...voiceChoices].some((c) => !c.available);
  }

  get loaded(): boolean {
    return this.config !== null;
  }

  backendName(kind: BackendKind, name: string): string {
    return this.backends.find((b) => b.kind === kind && b.name === name)?.displayName || name;
  }

  voiceName(id: string): string {
    return this.voices.find((v) => v.id === id)?.name || id;
  }

  /** The call's setup as people say it, from SessionStarted's effective config. */
  describeSetup(stt: string, llmModel: string, ttsVoice: string): string {
    return [this.backendName(BackendKind.STT, stt), llmModel, this.voiceName(ttsVoice)].join(" · ");
  }
}

function voiceLabel(v: Voice): string {
  const details = [v.language, v.gender].filter(Boolean).join(", ");
  return details && !v.name.includes("(") ? `${v.name} (${details})` : v.name || v.id;
}

/** Fill a picker, grouped when the choices name groups; keep the current choice if still there. */
function fill(select: HTMLSelectElement, choices: Choice[], defaultLabel: string): void {
  const previous = select.value;
  select.replaceChildren(new Option(defaultLabel, ""));
  const groups = new Map<string, HTMLOptGroupElement>();
  for (const choice of choices) {
    let parent: HTMLSelectElement | HTMLOptGroupElement = select;
    if (choice.group) {
      let group = groups.get(choice.group);
      if (!group) {
        group = document.createElement("optgroup");
        group.label = choice.group;
        groups.set(choice.group, group);
        select.append(group);
      }
      parent = group;
    }
    const label = choice.available ? choice.label : `${choice.label} — ${plainReason(choice.reason)}`;
    const option = new Option(label, choice.id);
    option.disabled = !choice.available;
    parent.append(option);
  }
  if ([...select.options].some((o) => o.value === previous && !o.disabled)) select.value = previous;
}
