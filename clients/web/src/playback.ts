// Gapless playback of the agent's LINEAR16 audio: each chunk is scheduled to start exactly where
// the previous one ends; flush() stops everything at once (BARGE_IN). It says when sound starts
// and stops, which is when the agent is heard speaking.

/** AudioContext.setSinkId (Chromium 110+), not yet in TypeScript's DOM types. */
interface SinkSelectable {
  setSinkId(sinkId: string): Promise<void>;
}

export function canChooseSpeaker(): boolean {
  return "setSinkId" in AudioContext.prototype;
}

export class Playback {
  private readonly context: AudioContext;
  private readonly sources = new Set<AudioBufferSourceNode>();
  private nextStart = 0;
  /** Milliseconds of agent audio received in this call. */
  receivedMs = 0;
  /** Called with true when sound starts, false when the last queued sound ends or is flushed. */
  onPlaying: (playing: boolean) => void = () => {};

  constructor(private readonly sampleRate: number) {
    this.context = new AudioContext({ sampleRate });
  }

  async resume(): Promise<void> {
    await this.context.resume();
  }

  get playing(): boolean {
    return this.sources.size > 0;
  }

  /** Play through this output device ("" is the system default), where the browser can. */
  async setSpeaker(deviceId: string): Promise<void> {
    if (canChooseSpeaker()) await (this.context as unknown as SinkSelectable).setSinkId(deviceId);
  }

  /** Queue little-endian 16-bit mono PCM at the session's output rate. */
  enqueue(pcm: Uint8Array): void {
    const samples = Math.floor(pcm.byteLength / 2);
    if (samples === 0) return;
    const view = new DataView(pcm.buffer, pcm.byteOffset, samples * 2);
    const buffer = this.context.createBuffer(1, samples, this.sampleRate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < samples; i++) channel[i] = view.getInt16(i * 2, true) / 0x8000;
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    // A short lead when the queue ran dry, so the first chunk does not start late and click.
    const start = Math.max(this.nextStart, this.context.currentTime + 0.02);
    source.start(start);
    this.nextStart = start + buffer.duration;
    this.receivedMs += buffer.duration * 1000;
    this.sources.add(source);
    if (this.sources.size === 1) this.onPlaying(true);
    source.onended = () => {
      this.sources.delete(source);
      if (this.sources.size === 0) this.onPlaying(false);
    };
  }

  /** Drop everything queued or playing now. */
  flush(): void {
    const wasPlaying = this.playing;
    for (const source of this.sources) {
      source.onended = null;
      source.stop();
      source.disconnect();
    }
    this.sources.clear();
    this.nextStart = 0;
    if (wasPlaying) this.onPlaying(false);
  }

  async close(): Promise<void> {
    this.flush();
    await this.context.close();
  }
}
