// One call: Converse over the server's /converse WebSocket (binary frames, one protobuf
// ConverseRequest or ConverseResponse each), the microphone through an AudioWorklet as 16 kHz
// LINEAR16 frames, and the agent's audio through gapless playback.

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
}

export interface CallHandlers {
  onResponse(response: ConverseResponse): void;
  onClosed(code: number, reason: string): void;
}

export class Call {
  private readonly socket: WebSocket;
  private readonly playback = new Playback(OUTPUT_RATE);
  private capture: AudioContext | null = null;
  private microphone: MediaStream | null = null;
  private ended = false;

  private constructor(socket: WebSocket, private readonly handlers: CallHandlers) {
    this.socket = socket;
    socket.binaryType = "arraybuffer";
    socket.onmessage = (event) => this.receive(event.data as ArrayBuffer);
    socket.onclose = (event) => {
      void this.release();
      handlers.onClosed(event.code, event.reason);
    };
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
      socket.onerror = () => reject(new Error("could not connect to the server's /converse"));
    });
    const call = new Call(socket, handlers);
    call.send({ case: "config", value: sessionConfig(choices) });
    try {
      await call.playback.resume();
      await call.startMicrophone(choices.voiceProcessing);
    } catch (error) {
      call.hangup(); // no microphone (denied or absent): end the session we opened
      throw new Error(`the microphone could not be opened: ${error instanceof Error ? error.message : error}`);
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
    this.stopMicrophone();
    this.playback.flush();
    this.send({ case: "hangup", value: {} } as ConverseRequest["request"]);
    setTimeout(() => void this.release(), 3000);
  }

  get receivedAudioMs(): number {
    return this.playback.receivedMs;
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

  private async startMicrophone(processing: boolean): Promise<void> {
    this.microphone = await navigator.mediaDevices.getUserMedia({
      audio: {
        channelCount: 1,
        echoCancellation: processing,
        noiseSuppression: processing,
        autoGainControl: processing,
      },
    });
    if (this.ended) return this.stopMicrophone();
    // A 16 kHz context lets the browser resample the microphone. Browsers that cannot connect
    // a microphone to a context at another rate (Firefox) get their own rate, and the worklet
    // resamples.
    this.capture = new AudioContext({ sampleRate: INPUT_RATE });
    let source: MediaStreamAudioSourceNode;
    try {
      source = this.capture.createMediaStreamSource(this.microphone);
    } catch {
      await this.capture.close();
      this.capture = new AudioContext();
      source = this.capture.createMediaStreamSource(this.microphone);
    }
    await this.capture.audioWorklet.addModule(new URL("capture-worklet.js", location.href));
    const worklet = new AudioWorkletNode(this.capture, "capture");
    worklet.port.onmessage = (event: MessageEvent<Uint8Array>) =>
      this.send({ case: "audio", value: event.data });
    source.connect(worklet);
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
