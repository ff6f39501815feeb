// A small SVG bar chart of voice-to-voice latency per turn, redrawn as TurnMetrics arrive. It is
// drawn from the same rows as the call's latency table: one slot per row, a bar where the row
// has a voice-to-voice figure (a greeting or an interruption alone has none).

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 480;
const HEIGHT = 160;
const MARGIN = { top: 12, right: 8, bottom: 22, left: 44 };

export interface TurnPoint {
  /** As the table's first column says it, e.g. "2" or "greeting". */
  label: string;
  /** 0: none. */
  voiceToVoiceMs: number;
}

function element<K extends keyof SVGElementTagNameMap>(
  name: K,
  attributes: Record<string, string | number>,
  text?: string,
): SVGElementTagNameMap[K] {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

export function drawChart(svg: SVGSVGElement, points: TurnPoint[]): void {
  svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
  svg.replaceChildren();
  const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const top = Math.max(1000, ...points.map((p) => p.voiceToVoiceMs));
  const scale = (ms: number) => MARGIN.top + plotHeight - (ms / top) * plotHeight;
  for (const tick of [0, top / 2, top]) {
    svg.append(
      element("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: scale(tick), y2: scale(tick), class: "grid" }),
      element("text", { x: MARGIN.left - 4, y: scale(tick) + 4, "text-anchor": "end", class: "axis" }, `${Math.round(tick)}`),
    );
  }
  const slot = plotWidth / Math.max(points.length, 10);
  points.forEach((point, i) => {
    const x = MARGIN.left + i * slot + slot * 0.15;
    if (point.voiceToVoiceMs > 0) {
      const y = scale(point.voiceToVoiceMs);
      const bar = element("rect", { x, y, width: slot * 0.7, height: MARGIN.top + plotHeight - y, class: "bar" });
      bar.append(element("title", {}, `turn ${point.label}: ${Math.round(point.voiceToVoiceMs)} ms`));
      svg.append(bar);
    }
    const short = point.label.length > 4 ? point.label.slice(0, 1).toUpperCase() : point.label;
    svg.append(element("text", { x: x + slot * 0.35, y: HEIGHT - 6, "text-anchor": "middle", class: "axis" }, short));
  });
  const timed = points.filter((p) => p.voiceToVoiceMs > 0);
  const last = timed.at(-1);
  svg.setAttribute(
    "aria-label",
    last
      ? `Voice-to-voice latency for ${timed.length} turns; last ${Math.round(last.voiceToVoiceMs)} ms`
      : "Voice-to-voice latency per turn: no turns yet",
  );
}
