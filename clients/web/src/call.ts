// One call: Converse over the server's /converse WebSocket (binary frames, one protobuf
// ConverseRequest or ConverseResponse each), the microphone through an AudioWorklet as 16 kHz
// LINEAR16 frames (with a level for the meter, and mute), and the agent's audio through gapless
// playback on the chosen speaker.

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import {
  AudioEncoding,
  type ConverseRequest,
  ConverseRequestSchema,
  type ConverseResponse,
  ConverseResponseSchema,
  EventType,
  type SessionConfig,
  SessionConfigSchema,
  TurnDetectionMode,
} from "./gen/voiceagent/v1/voice_agent_pb";
import { Playback } from "./playback";

export const INPUT_RATE = 16000;
export const OUTPUT_RATE = 24000;
const SUBPROTOCOL = "voiceagent.v1";
const SUBPROTOCOL_CHARACTERS = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/; // an HTTP token (RFC 9110)

export interface CallChoices {
  stt: string;
  llmModel: string;
  ttsVoice: string;
  campaignId: string;
  /** The browser's echo cancellation, noise suppression and gain control: needed with
   * speakers (else the agent hears itself), but they alter the voice that speech recognition
   * hears; with headphones, raw audio is cleaner. */
  voiceProcessing: boolean;
  /** End of turn from a turn-completion model (true, the server default) or from silence. */
  semanticTurns: boolean;
  /** Input and output devices (enumerateDevices ids); "": the browser's default. */
  microphoneId: string;
  speakerId: string;
}

export interface CallHandlers {
  onResponse(response: ConverseResponse): void;
  /** The agent's audio started (true) or ran out (false) in the speaker. */
  onPlaying(playing: boolean): void;
  /** `hungUp`: this page asked for the end. */
  onClosed(code: number, reason: string, hungUp: boolean): void;
}

export class CouldNotConnect extends Error {}

export class Call {
  private readonly socket: WebSocket;
  private readonly playback = new Playback(OUTPUT_RATE);
  private capture: AudioContext | null = null;
  private microphone: MediaStream | null = null;
  private source: MediaStreamAudioSourceNode | null = null;
  private worklet: AudioWorkletNode | null = null;
  private level: AnalyserNode | null = null;
  private levelSamples = new Float32Array(512);
  private ended = false;
  private hungUp = false;
  private muted = false;

  private constructor(socket: WebSocket, private readonly handlers: CallHandlers) {
    this.socket = socket;
    socket.binaryType = "arraybuffer";
    socket.onmessage = (event) => this.receive(event.data as ArrayBuffer);
    socket.onclose = (event) => {
      void this.release();
      handlers.onClosed(event.code, event.reason, this.hungUp);
    };
    this.playback.onPlaying = (playing) => handlers.onPlaying(playing);
  }

  /** Open the socket, send the SessionConfig, then start the microphone. */
  static async start(choices: CallChoices, token: string, handlers: CallHandlers): Promise<Call> {
    const url = new URL("/converse", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    // Browsers cannot set headers on a WebSocket: the token travels as a subprotocol, or as a
    // query parameter when it has characters a subprotocol cannot carry.
    const protocols = [SUBPROTOCOL];
    if (token && SUBPROTOCOL_CHARACTERS.test(token)) protocols.push(`bearer.${token}`);
    else if (token) url.searchParams.set("token", token);
    const socket = new WebSocket(url, protocols);
    await new Promise<void>((resolve, reject) => {
      socket.onopen = () => resolve();
      socket.onerror = () => reject(new CouldNotConnect("could not connect to the server's /converse"));
    });
    const call = new Call(socket, handlers);
    call.send({ case: "config", value: sessionConfig(choices) });
    try {
      await call.playback.resume();
      await call.playback.setSpeaker(choices.speakerId);
      await call.startMicrophone(choices.voiceProcessing, choices.microphoneId);
    } catch (error) {
      call.hangup(); // no microphone (denied or absent): end the session we opened
      throw error;
    }
    return call;
  }

  /** Switch model and/or voice from the next agent turn (ConfigUpdate); history is kept. */
  update(llmModel: string, ttsVoice: string): void {
    const paths = [llmModel ? "llm_model" : "", ttsVoice ? "tts_voice" : ""].filter(Boolean);
    this.send({
      case: "update",
      value: { llmModel, ttsVoice, updateMask: create(FieldMaskSchema, { paths }) },
    } as ConverseRequest["request"]);
  }

  sayText(text: string): void {
    this.send({ case: "text", value: text });
  }

  /** Stop the microphone and the agent's voice, ask the server to end the session; it closes
   * the socket (or we do, if it has not within 3 s). */
  hangup(): void {
    this.hungUp = true;
    this.stopMicrophone();
    this.playback.flush();
    this.send({ case: "hangup", value: {} } as ConverseRequest["request"]);
    setTimeout(() => void this.release(), 3000);
  }

  get receivedAudioMs(): number {
    return this.playback.receivedMs;
  }

  /** Muted, the microphone sends silence: the call stays up, the agent hears nothing. */
  setMuted(muted: boolean): void {
    this.muted = muted;
    this.microphone?.getTracks().forEach((track) => (track.enabled = !muted));
  }

  /** The microphone's loudness now, 0..1 (RMS, scaled so that speech fills most of the meter). */
  microphoneLevel(): number {
    if (!this.level || this.muted) return 0;
    this.level.getFloatTimeDomainData(this.levelSamples);
    let sum = 0;
    for (const sample of this.levelSamples) sum += sample * sample;
    return Math.min(1, Math.sqrt(sum / this.levelSamples.length) * 4);
  }

  /** Go on with another microphone, mid-call. */
  async switchMicrophone(deviceId: string, processing: boolean): Promise<void> {
    if (!this.capture || !this.worklet || this.ended) return;
    const next = await openMicrophone(processing, deviceId);
    if (this.ended) return next.getTracks().forEach((track) => track.stop());
    this.source?.disconnect();
    this.stopMicrophone();
    this.microphone = next;
    this.setMuted(this.muted);
    this.connectSource();
  }

  async setSpeaker(deviceId: string): Promise<void> {
    await this.playback.setSpeaker(deviceId);
  }

  private send(request: ConverseRequest["request"]): void {
    if (this.socket.readyState !== WebSocket.OPEN) return;
    this.socket.send(toBinary(ConverseRequestSchema, create(ConverseRequestSchema, { request })));
  }

  private receive(data: ArrayBuffer): void {
    const response = fromBinary(ConverseResponseSchema, new Uint8Array(data));
    const message = response.response;
    if (message.case === "audio") this.playback.enqueue(message.value.audio);
    if (message.case === "event" && message.value.type === EventType.BARGE_IN) this.playback.flush();
    this.handlers.onResponse(response);
  }

  private async startMicrophone(processing: boolean, deviceId: string): Promise<void> {
    this.microphone = await openMicrophone(processing, deviceId);
    if (this.ended) return this.stopMicrophone();
    // A 16 kHz context lets the browser resample the microphone. Browsers that cannot connect
    // a microphone to a context at another rate (Firefox) get their own rate, and the worklet
    // resamples.
    this.capture = new AudioContext({ sampleRate: INPUT_RATE });
    try {
      this.capture.createMediaStreamSource(this.microphone).disconnect();
    } catch {
      await this.capture.close();
      this.capture = new AudioContext();
    }
    await this.capture.audioWorklet.addModule(new URL("capture-worklet.js", location.href));
    this.worklet = new AudioWorkletNode(this.capture, "capture");
    this.worklet.port.onmessage = (event: MessageEvent<Uint8Array>) =>
      this.send({ case: "audio", value: event.data });
    this.level = new AnalyserNode(this.capture, { fftSize: this.levelSamples.length });
    this.connectSource();
  }

  private connectSource(): void {
    if (!this.capture || !this.worklet || !this.level || !this.microphone) return;
    this.source = this.capture.createMediaStreamSource(this.microphone);
    this.source.connect(this.worklet);
    this.source.connect(this.level);
  }

  private stopMicrophone(): void {
    this.microphone?.getTracks().forEach((track) => track.stop());
    this.microphone = null;
  }

  private async release(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    this.stopMicrophone();
    if (this.socket.readyState === WebSocket.OPEN) this.socket.close(1000, "hung up");
    await Promise.allSettled([this.capture?.close(), this.playback.close()]);
  }
}

function openMicrophone(processing: boolean, deviceId: string): Promise<MediaStream> {
  return navigator.mediaDevices.getUserMedia({
    audio: {
      deviceId: deviceId ? { exact: deviceId } : undefined,
      channelCount: 1,
      echoCancellation: processing,
      noiseSuppression: processing,
      autoGainControl: processing,
    },
  });
}

function sessionConfig(choices: CallChoices): SessionConfig {
  return create(SessionConfigSchema, {
    inputFormat: { encoding: AudioEncoding.LINEAR16, sampleRateHertz: INPUT_RATE },
    outputFormat: { encoding: AudioEncoding.LINEAR16, sampleRateHertz: OUTPUT_RATE },
    stt: choices.stt,
    llmModel: choices.llmModel,
    ttsVoice: choices.ttsVoice,
    campaignId: choices.campaignId,
    turnDetection: {
      mode: choices.semanticTurns
        ? TurnDetectionMode.TURN_DETECTION_SEMANTIC
        : TurnDetectionMode.TURN_DETECTION_SILENCE,
    },
  });
}
