// Microphone and speaker pickers (enumerateDevices). Browsers name devices only once the page
// may use the microphone, so the lists are read again after a call opens it and whenever
// devices come and go. The speaker picker needs AudioContext.setSinkId; without it, a note says
// the default speaker is used.

import { byId } from "./dom";
import { canChooseSpeaker } from "./playback";

export class DevicePickers {
  readonly microphone = byId<HTMLSelectElement>("microphone");
  readonly speaker = byId<HTMLSelectElement>("speaker");
  private readonly speakerNote = byId<HTMLParagraphElement>("speaker-note");

  constructor(onMicrophone: (id: string) => void, onSpeaker: (id: string) => void) {
    this.microphone.addEventListener("change", () => onMicrophone(this.microphone.value));
    this.speaker.addEventListener("change", () => onSpeaker(this.speaker.value));
    navigator.mediaDevices?.addEventListener("devicechange", () => void this.refresh());
    const speakers = canChooseSpeaker();
    this.speakerNote.hidden = speakers;
    this.speaker.hidden = !speakers;
    (this.speaker.labels?.[0] as HTMLElement | undefined)?.toggleAttribute("hidden", !speakers);
  }

  async refresh(): Promise<void> {
    const devices = (await navigator.mediaDevices?.enumerateDevices()) ?? [];
    fill(this.microphone, devices.filter((d) => d.kind === "audioinput"), "Microphone");
    fill(this.speaker, devices.filter((d) => d.kind === "audiooutput"), "Speaker");
  }
}

function fill(select: HTMLSelectElement, devices: MediaDeviceInfo[], kind: string): void {
  const previous = select.value;
  const named = devices.filter((d) => d.deviceId && d.deviceId !== "default");
  select.replaceChildren(
    new Option(`The browser's default ${kind.toLowerCase()}`, ""),
    ...named.map((d, i) => new Option(d.label || `${kind} ${i + 1}`, d.deviceId)),
  );
  if (named.some((d) => d.deviceId === previous)) select.value = previous;
}
