// The developer log: the stream's raw events, close codes and server messages, folded away at the
// bottom of the page. It is the one place where enum names, codes and variable names appear.

import { byId, make } from "./dom";

const MAX_LINES = 500;
const list = byId<HTMLUListElement>("events");

export function logEvent(text: string): void {
  const item = make("li", "", `${new Date().toLocaleTimeString()} ${text}`);
  list.append(item);
  while (list.childElementCount > MAX_LINES) list.firstElementChild?.remove();
  list.scrollTop = list.scrollHeight;
}
