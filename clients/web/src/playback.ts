// Gapless playback of the agent's LINEAR16 audio: each chunk is scheduled to start exactly where
// the previous one ends; flush() stops everything at once (BARGE_IN).

export class Playback {
  private readonly context: AudioContext;
  private readonly sources = new Set<AudioBufferSourceNode>();
  private nextStart = 0;
  /** Milliseconds of agent audio received in this call. */
  receivedMs = 0;

  constructor(private readonly sampleRate: number) {
    this.context = new AudioContext({ sampleRate });
  }

  async resume(): Promise<void> {
    await this.context.resume();
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
    source.onended = () => this.sources.delete(source);
  }

  /** Drop everything queued or playing now. */
  flush(): void {
    for (const source of this.sources) {
      source.onended = null;
      source.stop();
      source.disconnect();
    }
    this.sources.clear();
    this.nextStart = 0;
  }

  async close(): Promise<void> {
    this.flush();
    await this.context.close();
  }
}
