// Microphone capture in the audio thread: mono float samples at the context's rate in,
// 20 ms frames of 16 kHz LINEAR16 (signed 16-bit little-endian) out, posted to the page.
// The page asks for a 16 kHz AudioContext, so the browser resamples; when a browser keeps its
// own rate, frames are resampled here by linear interpolation.

declare const sampleRate: number;
declare class AudioWorkletProcessor {
  readonly port: MessagePort;
}
declare function registerProcessor(name: string, ctor: new () => AudioWorkletProcessor): void;

const TARGET_RATE = 16000;
const FRAME_SAMPLES = TARGET_RATE / 50; // 20 ms

class CaptureProcessor extends AudioWorkletProcessor {
  private frame = new Int16Array(FRAME_SAMPLES);
  private filled = 0;
  private step = sampleRate / TARGET_RATE; // input samples per output sample
  private position = 0; // of the next output sample, in input samples from this block's start
  private previous = 0; // last input sample of the previous block

  process(inputs: Float32Array[][]): boolean {
    const channel = inputs[0]?.[0];
    if (!channel) return true;
    if (this.step === 1) {
      for (const sample of channel) this.push(sample);
      return true;
    }
    while (this.position < channel.length) {
      const index = Math.floor(this.position);
      const fraction = this.position - index;
      const before = index === 0 ? this.previous : channel[index - 1];
      const after = channel[index];
      // position p maps to the input sample p - 1 (the sample before the block is index -1)
      this.push(before + (after - before) * fraction);
      this.position += this.step;
    }
    this.position -= channel.length;
    this.previous = channel[channel.length - 1];
    return true;
  }

  private push(sample: number): void {
    const clamped = Math.max(-1, Math.min(1, sample));
    this.frame[this.filled++] = clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
    if (this.filled === FRAME_SAMPLES) {
      const bytes = new Uint8Array(FRAME_SAMPLES * 2);
      const view = new DataView(bytes.buffer);
      this.frame.forEach((value, i) => view.setInt16(i * 2, value, true));
      this.port.postMessage(bytes, [bytes.buffer]);
      this.filled = 0;
    }
  }
}

registerProcessor("capture", CaptureProcessor);
