// Finding the page's elements and making new ones: every module looks its elements up here, so a
// missing id fails loudly at start rather than later in a call.

export function byId<T extends HTMLElement>(id: string): T {
  const node = document.getElementById(id);
  if (!node) throw new Error(`#${id} is missing from the page`);
  return node as T;
}

/** A new element with a class and text (both optional). */
export function make<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className = "",
  text = "",
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}

/** Show a message in a `.message` element: plain (progress), "ok" or "error". */
export function showMessage(node: HTMLElement, text: string, tone: "" | "ok" | "error" = ""): void {
  node.textContent = text;
  node.classList.toggle("ok", tone === "ok");
  node.classList.toggle("error", tone === "error");
}
