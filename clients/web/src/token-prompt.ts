// The access token prompt: it opens by itself when the server answers "unauthenticated" (an RPC,
// or the call's WebSocket closing with 1008), says whether a token was missing or refused, and
// hands the new token to the page, which tries again. Until then the page disables what needs it.

import { setToken, token } from "./api";
import { byId, showMessage } from "./dom";

export class TokenPrompt {
  private readonly section = byId<HTMLElement>("token-prompt");
  private readonly form = byId<HTMLFormElement>("token-form");
  private readonly input = byId<HTMLInputElement>("token");
  private readonly message = byId<HTMLParagraphElement>("token-message");

  /** `onSaved`: load again with the new token; it calls `accepted()` or `open()` again. */
  constructor(private readonly onSaved: () => Promise<void>) {
    this.input.value = token();
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      const value = this.input.value.trim();
      if (!value) return;
      setToken(value);
      showMessage(this.message, "Checking the token…");
      void this.onSaved();
    });
  }

  get isOpen(): boolean {
    return !this.section.hidden;
  }

  /** The server wants a token: ask for one (or a better one, if this browser sent one). */
  open(): void {
    const wasOpen = this.isOpen;
    this.section.hidden = false;
    showMessage(
      this.message,
      token() ? "The server did not accept this token. Check it and enter it again." : "",
      token() ? "error" : "",
    );
    if (!wasOpen) this.section.scrollIntoView({ block: "nearest" });
    this.input.focus();
    this.input.select();
  }

  /** The token worked: the prompt goes away. */
  accepted(): void {
    this.section.hidden = true;
    showMessage(this.message, "");
  }
}
