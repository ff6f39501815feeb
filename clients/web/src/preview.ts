// "Try the voice": the chosen voice says the typed sentence (PreviewVoice). Empty text is refused
// before asking the server; the button becomes "Stop" while the preview is on its way or playing.

import { voiceAgent } from "./api";
import { OUTPUT_RATE } from "./call";
import { logEvent } from "./developer-log";
import { byId, showMessage } from "./dom";
import { AudioEncoding } from "./gen/voiceagent/v1/voice_agent_pb";
import { type Problem, rpcProblem } from "./messages";
import { Playback } from "./playback";

export class VoicePreview {
  private readonly text = byId<HTMLInputElement>("preview-text");
  private readonly button = byId<HTMLButtonElement>("preview");
  private readonly message = byId<HTMLParagraphElement>("preview-message");
  private playback: Playback | null = null;
  private request: AbortController | null = null;

  /** `voice()`: the voice id to preview and its name; `speaker()`: the output device id. */
  constructor(
    private readonly voice: () => { id: string; name: string },
    private readonly speaker: () => string,
    private readonly onProblem: (problem: Problem) => void,
  ) {
    this.button.addEventListener("click", () => void (this.busy ? this.stop() : this.start()));
    this.text.addEventListener("input", () => showMessage(this.message, ""));
  }

  private get busy(): boolean {
    return this.request !== null || (this.playback?.playing ?? false);
  }

  private async start(): Promise<void> {
    const text = this.text.value.trim();
    if (!text) {
      showMessage(this.message, "Type a sentence for the voice to say first.", "error");
      this.text.focus();
      return;
    }
    const { id, name } = this.voice();
    this.request = new AbortController();
    this.setBusy(true);
    showMessage(this.message, `Asking ${name} to say it…`);
    try {
      // The AudioContext is made (and resumed) within the click, as autoplay rules want.
      this.playback ??= this.newPlayback();
      await this.playback.resume();
      await this.playback.setSpeaker(this.speaker());
      const response = await voiceAgent.previewVoice(
        { voice: id, text, outputFormat: { encoding: AudioEncoding.LINEAR16, sampleRateHertz: OUTPUT_RATE } },
        { signal: this.request.signal },
      );
      this.request = null;
      this.playback.flush();
      this.playback.enqueue(response.audio);
      showMessage(this.message, `Playing ${name}.`);
    } catch (error) {
      if (this.request?.signal.aborted) return; // stopped by the user
      this.request = null;
      this.setBusy(false);
      const problem = rpcProblem(error, "The preview");
      logEvent(`PreviewVoice failed: ${problem.detail}`);
      showMessage(this.message, problem.text, "error");
      this.onProblem(problem);
    }
  }

  stop(): void {
    this.request?.abort();
    this.request = null;
    this.playback?.flush();
    this.setBusy(false);
    showMessage(this.message, "Preview stopped.");
  }

  private newPlayback(): Playback {
    const playback = new Playback(OUTPUT_RATE);
    playback.onPlaying = (playing) => {
      if (playing || this.request) return;
      this.setBusy(false);
      showMessage(this.message, "");
    };
    return playback;
  }

  private setBusy(busy: boolean): void {
    this.button.textContent = busy ? "Stop preview" : "Preview voice";
  }
}
