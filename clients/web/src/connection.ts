// Is the server there? A badge in the header from /healthz (polled every few seconds), and a
// banner with "Try again" when it cannot be reached. When it comes back, the page reloads what
// it needs by itself.

import { byId } from "./dom";

export type Health = "checking" | "ok" | "busy" | "down";

const POLL_MS = 5000;
const WORDS: Record<Health, string> = {
  checking: "Checking the server…",
  ok: "Server ready",
  busy: "Server starting up or shutting down",
  down: "Server unreachable",
};

export class Connection {
  private readonly badge = byId<HTMLParagraphElement>("health");
  private readonly banner = byId<HTMLDivElement>("banner");
  private readonly bannerText = byId<HTMLParagraphElement>("banner-text");
  private readonly retry = byId<HTMLButtonElement>("retry");
  private health: Health = "checking";
  private timer = 0;
  private checking = false;

  /** `onRetry`: load what the page needs again (the banner's button, or the server is back). */
  constructor(private readonly onRetry: () => Promise<void>) {
    this.retry.addEventListener("click", () => void this.tryAgain());
  }

  /** Start polling; the page lives as long as this does, so nothing stops it. */
  start(): void {
    void this.check();
  }

  get state(): Health {
    return this.health;
  }

  /** A request failed without reaching the server. */
  unreachable(text: string): void {
    this.show("down");
    this.bannerText.textContent = text;
    this.banner.hidden = false;
  }

  /** The page loaded what it needs: the banner, if any, goes. */
  reached(): void {
    this.banner.hidden = true;
  }

  private async tryAgain(): Promise<void> {
    this.retry.disabled = true;
    this.bannerText.textContent = "Trying again…";
    try {
      await this.check(false);
      await this.onRetry();
    } finally {
      this.retry.disabled = false;
    }
  }

  /** `reloadWhenBack`: call onRetry if the server was unreachable and answers now. */
  private async check(reloadWhenBack = true): Promise<void> {
    if (this.checking) return;
    this.checking = true;
    window.clearTimeout(this.timer);
    const before = this.health;
    let now: Health;
    try {
      const response = await fetch("/healthz", { cache: "no-store" });
      now = response.ok ? "ok" : "busy";
    } catch {
      now = "down";
    } finally {
      this.checking = false;
    }
    this.show(now);
    if (now === "down" && this.banner.hidden) {
      this.unreachable("The voice agent server cannot be reached. It may be stopped or restarting.");
    }
    if (reloadWhenBack && before === "down" && now !== "down") void this.onRetry(); // it is back
    this.timer = window.setTimeout(() => void this.check(), POLL_MS);
  }

  private show(health: Health): void {
    this.health = health;
    this.badge.dataset.health = health;
    this.badge.textContent = WORDS[health];
  }
}
