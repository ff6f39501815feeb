// Campaigns: the list (a table, stacked cards on phones), the create/edit form with its feedback
// right under it, and the campaign picker of the agent's options. A campaign just created or
// edited is selected for the next call.

import { create, fromJson, type JsonValue, toJson } from "@bufbuild/protobuf";
import { FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import { campaigns } from "./api";
import { logEvent } from "./developer-log";
import { byId, make, showMessage } from "./dom";
import { type Campaign, CampaignSchema } from "./gen/voiceagent/v1/campaigns_pb";
import { type Problem, rpcProblem } from "./messages";

const CAMPAIGN_FIELDS = [
  "name", "persona", "greeting", "llm_model", "tts_voice", "language", "tools", "builtin_tools",
];

export class CampaignsView {
  readonly picker = byId<HTMLSelectElement>("campaign");
  private readonly table = byId<HTMLTableElement>("campaigns-table");
  private readonly rows = byId<HTMLTableSectionElement>("campaigns");
  private readonly empty = byId<HTMLParagraphElement>("campaigns-empty");
  private readonly form = byId<HTMLFormElement>("campaign-form");
  private readonly title = byId<HTMLHeadingElement>("campaign-form-title");
  private readonly id = byId<HTMLInputElement>("campaign-id");
  private readonly name = byId<HTMLInputElement>("campaign-name");
  private readonly persona = byId<HTMLTextAreaElement>("campaign-persona");
  private readonly greeting = byId<HTMLInputElement>("campaign-greeting");
  private readonly model = byId<HTMLSelectElement>("campaign-model");
  private readonly voice = byId<HTMLSelectElement>("campaign-voice");
  private readonly language = byId<HTMLInputElement>("campaign-language");
  private readonly tools = byId<HTMLTextAreaElement>("campaign-tools");
  private readonly save = byId<HTMLButtonElement>("campaign-save");
  private readonly message = byId<HTMLParagraphElement>("campaign-message");
  private list: Campaign[] = [];

  /** `voiceName`: a voice id as people know it; `onProblem`: an RPC failed. */
  constructor(
    private readonly voiceName: (id: string) => string,
    private readonly onProblem: (problem: Problem) => void,
  ) {
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.attempt("Saving the campaign", () => this.saveForm());
    });
    this.form.addEventListener("reset", () => this.resetForm());
  }

  async load(): Promise<void> {
    const list: Campaign[] = [];
    let pageToken = "";
    do {
      const page = await campaigns.listCampaigns({ pageSize: 100, pageToken });
      list.push(...page.campaigns);
      pageToken = page.nextPageToken;
    } while (pageToken);
    this.list = list;
    this.render();
  }

  /** Form controls, for the page to disable while the server cannot be used. */
  get controls(): (HTMLButtonElement | HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement)[] {
    return [this.name, this.persona, this.greeting, this.model, this.voice, this.language, this.tools, this.save,
      ...this.rows.querySelectorAll("button")];
  }

  private render(): void {
    this.rows.replaceChildren(...this.list.map((c) => this.row(c)));
    this.table.hidden = this.list.length === 0;
    this.empty.hidden = this.list.length > 0;
    const selected = this.picker.value;
    this.picker.replaceChildren(
      new Option("None", ""),
      ...this.list.map((c) => new Option(c.name, c.id)),
    );
    if (this.list.some((c) => c.id === selected)) this.picker.value = selected;
  }

  private row(c: Campaign): HTMLTableRowElement {
    const row = document.createElement("tr");
    const cells: [string, string][] = [
      ["Name", c.name],
      ["Model", c.llmModel || "Server default"],
      ["Voice", c.ttsVoice ? this.voiceName(c.ttsVoice) : "Server default"],
      ["Language", c.language || "en"],
    ];
    for (const [label, text] of cells) {
      const cell = make("td", "", text);
      cell.dataset.label = label;
      row.append(cell);
    }
    const actions = make("td");
    const buttons = make("div", "row");
    buttons.append(
      button("Edit", `Edit campaign ${c.name}`, () => this.edit(c)),
      button("Delete", `Delete campaign ${c.name}`, () => void this.attempt("Deleting the campaign", () => this.remove(c))),
    );
    actions.append(buttons);
    row.append(actions);
    return row;
  }

  private edit(c: Campaign): void {
    this.id.value = c.id;
    this.name.value = c.name;
    this.persona.value = c.persona;
    this.greeting.value = c.greeting;
    this.model.value = c.llmModel;
    this.voice.value = c.ttsVoice;
    this.language.value = c.language;
    // Tools as the proto's JSON; webhook header values come back empty (write-only) and an empty
    // value sent back keeps the stored one.
    const { tools, builtinTools } = toJson(CampaignSchema, c) as { tools?: JsonValue; builtinTools?: JsonValue };
    this.tools.value = tools || builtinTools ? JSON.stringify({ tools, builtinTools }, null, 2) : "";
    this.title.textContent = `Edit campaign ${c.name}`;
    this.save.textContent = "Save changes";
    showMessage(this.message, "");
    this.form.scrollIntoView({ block: "nearest" });
    this.name.focus();
  }

  private resetForm(): void {
    this.id.value = "";
    this.title.textContent = "New campaign";
    this.save.textContent = "Create campaign";
  }

  private async saveForm(): Promise<void> {
    const fields = {
      name: this.name.value.trim(),
      persona: this.persona.value,
      greeting: this.greeting.value,
      llmModel: this.model.value,
      ttsVoice: this.voice.value,
      language: this.language.value.trim(),
      ...this.toolsField(),
    };
    const id = this.id.value;
    let saved: Campaign;
    if (id) {
      const current = this.list.find((c) => c.id === id);
      saved = await campaigns.updateCampaign({
        campaign: create(CampaignSchema, { ...fields, id, etag: current?.etag ?? "" }),
        updateMask: create(FieldMaskSchema, { paths: CAMPAIGN_FIELDS }),
      });
    } else {
      saved = await campaigns.createCampaign({ campaign: fields });
    }
    this.form.reset();
    await this.load();
    this.picker.value = saved.id;
    const done = id ? "Saved" : "Created";
    showMessage(this.message, `${done} campaign “${saved.name}”. It is selected for your next call.`, "ok");
  }

  /** The tools textarea: `{"tools": [...], "builtinTools": {...}}` in the proto's JSON. */
  private toolsField(): Pick<Campaign, "tools" | "builtinTools"> {
    const text = this.tools.value.trim();
    if (!text) return { tools: [], builtinTools: undefined };
    let json: JsonValue;
    try {
      json = JSON.parse(text) as JsonValue;
    } catch (err) {
      throw new Error(`Tools are not valid JSON: ${(err as Error).message}`);
    }
    const parsed = fromJson(CampaignSchema, json);
    return { tools: parsed.tools, builtinTools: parsed.builtinTools };
  }

  private async remove(c: Campaign): Promise<void> {
    if (!confirm(`Delete campaign ${c.name}?`)) return;
    await campaigns.deleteCampaign({ id: c.id });
    if (this.id.value === c.id) this.form.reset();
    await this.load();
    showMessage(this.message, `Deleted campaign “${c.name}”.`, "ok");
  }

  private async attempt(what: string, action: () => Promise<void>): Promise<void> {
    try {
      await action();
    } catch (error) {
      const problem = rpcProblem(error, what);
      logEvent(`${what} failed: ${problem.detail}`);
      showMessage(this.message, problem.text, "error");
      this.onProblem(problem);
    }
  }
}

function button(text: string, label: string, onClick: () => void): HTMLButtonElement {
  const node = make("button", "secondary", text);
  node.type = "button";
  node.setAttribute("aria-label", label);
  node.addEventListener("click", onClick);
  return node;
}
