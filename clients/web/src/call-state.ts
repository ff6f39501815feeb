// What the call is doing now, from the stream's events and the speaker: the one answer to "can I
// talk?" that the page shows. Turn events say the caller is talking or done, the agent's text
// and AGENT_TURN_DONE bracket its answer, the speaker says when it is heard, BARGE_IN cuts it.

import {
  type ConverseResponse,
  EventType,
  TurnEvent,
} from "./gen/voiceagent/v1/voice_agent_pb";

export type CallState = "connecting" | "listening" | "thinking" | "speaking" | "ended";

export const STATE_WORDS: Record<CallState | "idle", string> = {
  idle: "Not in a call",
  connecting: "Connecting…",
  listening: "Listening",
  thinking: "Thinking…",
  speaking: "Agent speaking",
  ended: "Call ended",
};

export class CallStateMachine {
  private current: CallState = "connecting";
  /** The agent has an answer under way: its text or audio came, AGENT_TURN_DONE did not. */
  private answering = false;
  private playing = false;

  constructor(private readonly onChange: (state: CallState) => void) {}

  get state(): CallState {
    return this.current;
  }

  response(response: ConverseResponse): void {
    const message = response.response;
    switch (message.case) {
      case "sessionStarted":
        if (this.current === "connecting") this.set("listening");
        break;
      case "transcript": {
        const t = message.value;
        if (t.isFinal || t.event === TurnEvent.EAGER_END_OF_TURN) {
          if (t.text && !this.playing) this.set("thinking");
        } else if (t.event === TurnEvent.TURN_RESUMED && this.current === "thinking" && !this.answering) {
          this.set("listening");
        }
        break;
      }
      case "agentText":
        if (!message.value.final) this.answering = true;
        break;
      case "audio":
        this.answering = true;
        break;
      case "event":
        if (message.value.type === EventType.AGENT_TURN_DONE) {
          this.answering = false;
          if (!this.playing) this.set("listening");
        } else if (message.value.type === EventType.BARGE_IN) {
          this.answering = false;
          this.playing = false;
          this.set("listening");
        }
        break;
      default:
        break;
    }
  }

  /** The speaker started or ran out of the agent's audio. */
  speaker(playing: boolean): void {
    this.playing = playing;
    if (playing) this.set("speaking");
    else if (!this.answering) this.set("listening");
    // Ran dry mid-answer (the next sentence is still being synthesized): still speaking.
  }

  /** A typed turn was sent: the agent is working on it. */
  typed(): void {
    if (!this.playing) this.set("thinking");
  }

  closed(): void {
    this.set("ended");
  }

  private set(state: CallState): void {
    if (this.current === state || this.current === "ended") return;
    this.current = state;
    this.onChange(state);
  }
}
